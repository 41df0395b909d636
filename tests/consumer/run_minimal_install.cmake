# cmake -P script: configure oq's sources as a user installing the library
# would (tests, examples, benchmarks and tools off, no CUDA), where every
# package that only those need is a trap: doctest_DIR, benchmark_DIR and
# CLI11_DIR point at package configs that stop the configure, so a
# find_package of any of them, REQUIRED or not, fails this test. Then
# install into ${OQ_CONSUMER_WORK}/prefix-minimal (consumer.find_package_minimal
# builds a user's project from there).
foreach(var OQ_SOURCE OQ_CONSUMER_WORK OQ_CONSUMER_GENERATOR OQ_CONSUMER_CXX)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "run_minimal_install.cmake: ${var} is not set")
  endif()
endforeach()

set(build "${OQ_CONSUMER_WORK}/build-install-minimal")
set(traps "${OQ_CONSUMER_WORK}/traps")
set(prefix "${OQ_CONSUMER_WORK}/prefix-minimal")
file(REMOVE_RECURSE "${build}" "${traps}" "${prefix}")
set(trap_args "")
foreach(package doctest benchmark CLI11)
  file(WRITE "${traps}/${package}/${package}Config.cmake"
       "message(FATAL_ERROR \"find_package(${package}) was called, but a library-only install must not need it\")\n")
  list(APPEND trap_args "-D${package}_DIR=${traps}/${package}")
endforeach()

execute_process(
  COMMAND ${CMAKE_COMMAND} -S "${OQ_SOURCE}" -B "${build}" -G "${OQ_CONSUMER_GENERATOR}"
    -DCMAKE_CXX_COMPILER=${OQ_CONSUMER_CXX}
    -DCMAKE_BUILD_TYPE=Release
    -DOQ_BUILD_TESTS=OFF -DOQ_BUILD_EXAMPLES=OFF -DOQ_BUILD_BENCHMARKS=OFF -DOQ_BUILD_TOOLS=OFF
    -DOQ_ENABLE_CUDA=OFF
    ${trap_args}
  RESULT_VARIABLE status)
if(NOT status EQUAL 0)
  message(FATAL_ERROR "minimal install: configure failed")
endif()
execute_process(COMMAND ${CMAKE_COMMAND} --install "${build}" --prefix "${prefix}" RESULT_VARIABLE status)
if(NOT status EQUAL 0)
  message(FATAL_ERROR "minimal install: install failed")
endif()
# The library's files are there (the config's directory depends on the
# platform's CMAKE_INSTALL_LIBDIR: lib or lib64).
file(GLOB_RECURSE configs "${prefix}/*/oqConfig.cmake" "${prefix}/*/oqTargets.cmake")
list(LENGTH configs found)
if(NOT EXISTS "${prefix}/include/oq/oq.hpp" OR NOT found EQUAL 2)
  message(FATAL_ERROR "minimal install: oq.hpp, oqConfig.cmake or oqTargets.cmake is missing under ${prefix}")
endif()
