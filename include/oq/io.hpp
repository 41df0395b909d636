// oq/io.hpp: module header for file I/O (io/): the element types stored in
// checkpoint and activation files (dtype.hpp), the FormatError every parser
// throws for a malformed file (format_error.hpp), NumPy .npy files (npy.hpp),
// safetensors files (safetensors.hpp, memory-mapped through mapped_file.hpp),
// Hugging Face checkpoint directories, sharded or not (checkpoint.hpp),
// strict JSON reading for their headers and config.json (json.hpp), and
// 4-bit linears in GPTQ checkpoints' packed layout (gptq_checkpoint.hpp).
#pragma once

#include <oq/io/checkpoint.hpp>
#include <oq/io/dtype.hpp>
#include <oq/io/format_error.hpp>
#include <oq/io/gptq_checkpoint.hpp>
#include <oq/io/json.hpp>
#include <oq/io/mapped_file.hpp>
#include <oq/io/npy.hpp>
#include <oq/io/safetensors.hpp>
