# cmake -P script: configure, build and run tests/consumer/project in one mode.
# OQ_CONSUMER_NVCC, when set, is put on the PATH first: as a subproject oq
# must not enable CUDA because of it (the project checks that oq::cuda is
# undefined), and a find_package consumer is not affected.
foreach(var OQ_CONSUMER_SOURCE OQ_CONSUMER_WORK OQ_CONSUMER_GENERATOR OQ_CONSUMER_MODE OQ_CONSUMER_ARG)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "run_consumer.cmake: ${var} is not set")
  endif()
endforeach()
if(NOT DEFINED OQ_CONSUMER_BUILD)
  set(OQ_CONSUMER_BUILD "${OQ_CONSUMER_MODE}")
endif()

set(build "${OQ_CONSUMER_WORK}/build-${OQ_CONSUMER_BUILD}")
file(REMOVE_RECURSE "${build}")
if(OQ_CONSUMER_NVCC)
  get_filename_component(nvcc_dir "${OQ_CONSUMER_NVCC}" DIRECTORY)
  set(ENV{PATH} "${nvcc_dir}:$ENV{PATH}")
  # Nothing else may point CMake at a CUDA compiler: only the PATH is tested.
  unset(ENV{CUDACXX})
endif()

execute_process(
  COMMAND ${CMAKE_COMMAND} -S "${OQ_CONSUMER_SOURCE}" -B "${build}" -G "${OQ_CONSUMER_GENERATOR}"
    -DCMAKE_CXX_COMPILER=${OQ_CONSUMER_CXX}
    -DCMAKE_BUILD_TYPE=Release
    -DOQ_CONSUMER_MODE=${OQ_CONSUMER_MODE}
    -DOQ_CONSUMER_ARG=${OQ_CONSUMER_ARG}
    -DOQ_EXPECTED_VERSION=${OQ_EXPECTED_VERSION}
  RESULT_VARIABLE status)
if(NOT status EQUAL 0)
  message(FATAL_ERROR "consumer (${OQ_CONSUMER_BUILD}): configure failed")
endif()

execute_process(COMMAND ${CMAKE_COMMAND} --build "${build}" RESULT_VARIABLE status)
if(NOT status EQUAL 0)
  message(FATAL_ERROR "consumer (${OQ_CONSUMER_BUILD}): build failed")
endif()

foreach(program consumer strict_fp)
  execute_process(COMMAND "${build}/${program}" RESULT_VARIABLE status)
  if(NOT status EQUAL 0)
    message(FATAL_ERROR "consumer (${OQ_CONSUMER_BUILD}): ${program} failed (${status})")
  endif()
endforeach()
# Not a check (whether a compiler contracts by default is its choice): shows
# that strict_fp's check can fail, where the same code without oq::strict_fp
# is contracted.
execute_process(COMMAND "${build}/strict_fp_control")
