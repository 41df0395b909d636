// oq/cpu.hpp: module header for the CPU integer kernels (host, no CUDA).
//
// Real 4-bit inference on any machine: packed INT4 weights and per-token
// INT4/INT8 activations (bit-by-bit layouts next to their structs), fused
// per-token quantization with a block Hadamard or DuQuant rotation, and the
// W4A4 / W4A8 GEMM with the CUDA kernel's zero-point epilogue — AVX-512
// VNNI, AVX2 or scalar, picked at run time (cpu/isa.hpp), the same int32
// accumulators on every path.
#pragma once

#include <oq/cpu/gemm.hpp>
#include <oq/cpu/isa.hpp>
#include <oq/cpu/packed_activations.hpp>
#include <oq/cpu/packed_weights.hpp>
#include <oq/cpu/parallel.hpp>
#include <oq/cpu/quantize_per_token.hpp>
#include <oq/cpu/thread_pool.hpp>
#include <oq/cpu/types.hpp>
