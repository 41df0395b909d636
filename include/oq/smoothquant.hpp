// oq/smoothquant.hpp: module header for SmoothQuant smoothing (Xiao et al.
// 2023; docs/design.md §4), host only (Eigen).
//
// Per-channel scales s that move activation outliers into the weights,
// y = (X·diag(s)⁻¹)·(W·diag(s))ᵀ, folded into the preceding norm (or linear) so
// that smoothing costs nothing at run time:
//
//   using namespace oq::transform;
//   // 1. Calibrate: per-channel max |x| of the norm's output (cwiseMax over batches).
//   Eigen::VectorXf act_max = activation_channel_absmax(x_calib);
//   // 2. Scales, shared by the linears reading that output (max|W_j| over all of them).
//   Eigen::VectorXf s = smoothing_scales(act_max, weight_channel_absmax(wq, wk, wv), {.alpha = 0.5});
//   // 3. Fold 1/s into the RMSNorm weight and s into each weight: outputs are unchanged.
//   fold_into_rms_norm(gamma, s);
//   for (Eigen::MatrixXf* w : {&wq, &wk, &wv}) smooth_weights_in_place(*w, s);
//
// Or let search_smoothing_alpha(x_calib, std::vector{wq, wk, wv}, act_spec,
// weight_spec) choose α by the quantized layers' output error.
#pragma once

#include <oq/transform/smoothing.hpp>
