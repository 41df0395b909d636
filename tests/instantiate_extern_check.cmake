# ctest instantiate_test.extern: cmake -DNM=<nm> -DOBJECTS=<instantiate_test's
# objects> -P this file. Checks that instantiate_test.cpp, compiled with
# OQ_EXTERN_TEMPLATES, only refers to the instantiations <oq/instantiate.hpp>
# defines (nm type U) and compiles neither Eigen::BDCSVD (the test itself uses
# JacobiSVD, as its reference) nor Eigen::LLT: what the
# macro is for. Fails if the extern template declarations stop working.
foreach(object IN LISTS OBJECTS)
  if(object MATCHES "instantiate_test\\.cpp")
    set(test_object "${object}")
  endif()
endforeach()
if(NOT test_object)
  message(FATAL_ERROR "no object of instantiate_test.cpp among: ${OBJECTS}")
endif()
execute_process(COMMAND "${NM}" -C "${test_object}" OUTPUT_VARIABLE symbols RESULT_VARIABLE failed)
if(failed)
  message(FATAL_ERROR "${NM} failed on ${test_object}")
endif()
foreach(name IN ITEMS "detail_rotation::project_orthogonal<" "detail_gptq::upper_inverse_factor_in_place<")
  string(REGEX MATCH " U [^\n]*${name}" undefined "${symbols}")
  if(NOT undefined)
    message(FATAL_ERROR "instantiate_test.cpp does not refer to ${name}...> as undefined (U): "
                        "OQ_EXTERN_TEMPLATES did not keep it out")
  endif()
endforeach()
string(REGEX MATCH " [TWtw] [^\n]*(BDCSVD|LLT<|upper_inverse_factor_in_place<|project_orthogonal<)[^\n]*"
       compiled "${symbols}")
if(compiled)
  message(FATAL_ERROR "instantiate_test.cpp compiles what OQ_EXTERN_TEMPLATES should keep out: ${compiled}")
endif()
message(STATUS "instantiate_test.cpp refers to the extern instantiations and compiles none of them")
