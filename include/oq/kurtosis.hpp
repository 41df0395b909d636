// oq/kurtosis.hpp: module header for the kurtosis regularizer and the
// learned-clip QAT quantizer of Nrusimha et al. 2024 (docs/design.md §3), the two
// halves of their recipe against outlier channels: QAT of a linear layer's
// input through a learned clip [c−, c+], and λ·Σ_tokens K(row) of its output
// added to the training loss.
//
//   #include <oq/kurtosis.hpp>
//   auto x_hat = oq::quant::learned_clip_fake_quantize(x, c_lo, c_hi, 4);
//   auto y     = x_hat * w.transpose();                   // the layer
//   float loss = task_loss(y) + oq::analysis::kurtosis_regularizer(y, 1e-5);
//   auto g_y   = task_loss_grad(y) + oq::analysis::kurtosis_regularizer_grad(y, 1e-5);
//   auto g     = oq::quant::learned_clip_grad(x, c_lo, c_hi, 4, g_y * w);
//   // g.x flows to the previous layer; g.clip_lo, g.clip_hi update the bounds.
#pragma once

#include <oq/analysis/kurtosis.hpp>
#include <oq/quant/learned_clip.hpp>
