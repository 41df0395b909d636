# oq_add_header_check(): one generated translation unit per public header, each
# including its header twice (self-contained, include guard works), built as an
# object library so that `cmake --build` fails on a header that does not compile
# on its own. As CUB and CUTLASS do. .cuh headers are checked by nvcc when CUDA
# is enabled.
function(oq_add_header_check)
  set(include_root "${PROJECT_SOURCE_DIR}/include")
  set(out_root "${CMAKE_CURRENT_BINARY_DIR}/header_check")

  file(GLOB_RECURSE headers RELATIVE "${include_root}" CONFIGURE_DEPENDS "${include_root}/oq/*.hpp")
  set(sources "")
  foreach(header IN LISTS headers)
    set(source "${out_root}/${header}.cpp")
    file(CONFIGURE OUTPUT "${source}" CONTENT "#include <${header}>\n#include <${header}>\n")
    list(APPEND sources "${source}")
  endforeach()
  add_library(oq_header_check OBJECT ${sources})
  target_link_libraries(oq_header_check PRIVATE oq::oq)
  oq_target_warnings(oq_header_check)

  if(OQ_ENABLE_CUDA)
    file(GLOB_RECURSE cuda_headers RELATIVE "${include_root}" CONFIGURE_DEPENDS "${include_root}/oq/*.cuh")
    set(cuda_sources "")
    foreach(header IN LISTS cuda_headers)
      set(source "${out_root}/${header}.cu")
      file(CONFIGURE OUTPUT "${source}" CONTENT "#include <${header}>\n#include <${header}>\n")
      list(APPEND cuda_sources "${source}")
    endforeach()
    # core/ and format/ are shared with kernels: they must compile under nvcc too.
    file(GLOB_RECURSE shared_headers RELATIVE "${include_root}" CONFIGURE_DEPENDS
      "${include_root}/oq/core/*.hpp" "${include_root}/oq/format/*.hpp")
    foreach(header IN LISTS shared_headers)
      set(source "${out_root}/nvcc/${header}.cu")
      file(CONFIGURE OUTPUT "${source}" CONTENT "#include <${header}>\n#include <${header}>\n")
      list(APPEND cuda_sources "${source}")
    endforeach()
    add_library(oq_header_check_cuda OBJECT ${cuda_sources})
    target_link_libraries(oq_header_check_cuda PRIVATE oq::cuda)
    oq_target_cuda_std(oq_header_check_cuda)
  endif()
endfunction()
