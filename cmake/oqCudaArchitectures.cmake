# Default CUDA architectures: Ampere (80), Ada (89) and Hopper (90a). Hopper
# needs the arch-specific 90a target for wgmma/TMA (docs/design.md §7; PTX ISA:
# sm_90a features are not forward compatible). A user's own
# CMAKE_CUDA_ARCHITECTURES (cache or command line) always wins.
if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES OR CMAKE_CUDA_ARCHITECTURES STREQUAL "")
  set(CMAKE_CUDA_ARCHITECTURES 80 89 90a CACHE STRING "CUDA architectures oq builds for")
endif()
