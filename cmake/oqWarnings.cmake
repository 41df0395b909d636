# oq_target_options(target): the warning set of oq's own tests, examples and
# benchmarks (never forced on users of the INTERFACE targets), and no
# floating-point contraction in their host code: a product merged into an
# FMA rounds once instead of twice, and the tests compare host results with
# the device's (which core::mul_rn keeps uncontracted) and with references
# written differently, bit for bit. GCC contracts by default wherever the
# target has FMA (-march=haswell or newer). The host half of .cu files gets
# the same flag through nvcc; device code keeps nvcc's --fmad=true (speed)
# and calls core::mul_rn where a product must not be fused.
function(oq_target_options target)
  set(flags -Wall -Wextra -Wpedantic -Wshadow -ffp-contract=off)
  if(OQ_WARNINGS_AS_ERRORS)
    list(APPEND flags -Werror)
  endif()
  target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:${flags}>)
  target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=-ffp-contract=off>)
endfunction()

# oq_target_cuda_std(target): C++20 for a target's CUDA sources. CMake 3.25
# predates CUDA 13 and knows neither its cuda_std_20 feature nor the flag for
# CMAKE_CUDA_STANDARD 20, so oq's own CUDA targets pass the flag directly (the
# INTERFACE targets leave the dialect to their users).
function(oq_target_cuda_std target)
  target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:-std=c++20>)
endfunction()
