// oq/quant.hpp: module header for the host quantizers (Eigen).
//
// Uniform affine quantization, 2–8 bits, symmetric or asymmetric, per-tensor /
// per-channel / per-token / per-group (docs/design.md §2): parameters from data,
// quantize / dequantize / fake-quantize, MSE clip search, GPTQ, learnable
// weight clipping (OmniQuant's LWC), STE and LSQ gradients, INT4 packing, and
// the plain `_ref` implementations.
#pragma once

#include <oq/quant/clip_search.hpp>
#include <oq/quant/gptq.hpp>
#include <oq/quant/gradients.hpp>
#include <oq/quant/lwc.hpp>
#include <oq/quant/pack.hpp>
#include <oq/quant/params.hpp>
#include <oq/quant/quantize.hpp>
#include <oq/quant/reference.hpp>
#include <oq/quant/spec.hpp>
