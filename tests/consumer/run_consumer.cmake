# cmake -P script: configure, build and run tests/consumer/project in one mode.
foreach(var OQ_CONSUMER_SOURCE OQ_CONSUMER_WORK OQ_CONSUMER_GENERATOR OQ_CONSUMER_MODE OQ_CONSUMER_ARG)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "run_consumer.cmake: ${var} is not set")
  endif()
endforeach()

set(build "${OQ_CONSUMER_WORK}/build-${OQ_CONSUMER_MODE}")
file(REMOVE_RECURSE "${build}")

execute_process(
  COMMAND ${CMAKE_COMMAND} -S "${OQ_CONSUMER_SOURCE}" -B "${build}" -G "${OQ_CONSUMER_GENERATOR}"
    -DCMAKE_CXX_COMPILER=${OQ_CONSUMER_CXX}
    -DCMAKE_BUILD_TYPE=Release
    -DOQ_ENABLE_CUDA=OFF
    -DOQ_CONSUMER_MODE=${OQ_CONSUMER_MODE}
    -DOQ_CONSUMER_ARG=${OQ_CONSUMER_ARG}
    -DOQ_EXPECTED_VERSION=${OQ_EXPECTED_VERSION}
  RESULT_VARIABLE status)
if(NOT status EQUAL 0)
  message(FATAL_ERROR "consumer (${OQ_CONSUMER_MODE}): configure failed")
endif()

execute_process(COMMAND ${CMAKE_COMMAND} --build "${build}" RESULT_VARIABLE status)
if(NOT status EQUAL 0)
  message(FATAL_ERROR "consumer (${OQ_CONSUMER_MODE}): build failed")
endif()

execute_process(COMMAND "${build}/consumer" RESULT_VARIABLE status)
if(NOT status EQUAL 0)
  message(FATAL_ERROR "consumer (${OQ_CONSUMER_MODE}): the program failed (${status})")
endif()
