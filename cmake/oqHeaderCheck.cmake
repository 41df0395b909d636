# oq_add_header_check(): one generated translation unit per public header, each
# including its header twice (self-contained, include guard works), built as an
# object library so that `cmake --build` fails on a header that does not compile
# on its own. As CUB and CUTLASS do. .cuh headers are checked by nvcc when CUDA
# is enabled, and so are core/ and format/, which kernels include.

# Appends to `out_var` one generated source per header: <out_dir>/<header><ext>.
function(_oq_header_check_sources out_var include_root out_dir ext)
  set(sources "")
  foreach(header IN LISTS ARGN)
    set(source "${out_dir}/${header}${ext}")
    file(CONFIGURE OUTPUT "${source}" CONTENT "#include <${header}>\n#include <${header}>\n")
    list(APPEND sources "${source}")
  endforeach()
  set(${out_var} ${sources} PARENT_SCOPE)
endfunction()

function(oq_add_header_check)
  set(include_root "${PROJECT_SOURCE_DIR}/include")
  set(out_root "${CMAKE_CURRENT_BINARY_DIR}/header_check")

  file(GLOB_RECURSE headers RELATIVE "${include_root}" CONFIGURE_DEPENDS "${include_root}/oq/*.hpp")
  _oq_header_check_sources(sources "${include_root}" "${out_root}" ".cpp" ${headers})
  add_library(oq_header_check OBJECT ${sources})
  target_link_libraries(oq_header_check PRIVATE oq::oq)
  oq_target_options(oq_header_check)

  if(OQ_ENABLE_CUDA)
    file(GLOB_RECURSE cuda_headers RELATIVE "${include_root}" CONFIGURE_DEPENDS "${include_root}/oq/*.cuh")
    file(GLOB_RECURSE shared_headers RELATIVE "${include_root}" CONFIGURE_DEPENDS
      "${include_root}/oq/core/*.hpp" "${include_root}/oq/format/*.hpp")
    _oq_header_check_sources(cuda_sources "${include_root}" "${out_root}" ".cu" ${cuda_headers})
    _oq_header_check_sources(shared_sources "${include_root}" "${out_root}/nvcc" ".cu" ${shared_headers})
    add_library(oq_header_check_cuda OBJECT ${cuda_sources} ${shared_sources})
    target_link_libraries(oq_header_check_cuda PRIVATE oq::cuda)
    oq_target_cuda_std(oq_header_check_cuda)
  endif()
endfunction()
