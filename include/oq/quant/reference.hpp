// oq/quant/reference.hpp: plain scalar reference quantizers (the `_ref` family).
//
// Written from docs/design.md §2 a second time, as element loops over explicit indices
// with std::nearbyint and no Eigen expressions, so that the vectorised paths in
// params.hpp / quantize.hpp can be tested against something that shares none
// of their code. Slow by design; instantiate with double for a float64
// reference, or with float to check the float path bit for bit.
#pragma once

#include <oq/quant/params.hpp>
#include <oq/quant/spec.hpp>

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <limits>

namespace oq::quant {

/// Index of the parameter entry that covers element (r, c).
inline void param_index_ref(const QuantSpec& spec, Eigen::Index r, Eigen::Index c, Eigen::Index& i,
                            Eigen::Index& j) {
  i = spec.granularity == Granularity::kPerTensor ? 0 : r;
  j = spec.granularity == Granularity::kPerGroup ? c / spec.group_size : 0;
}

/// Reference compute_params. No input validation beyond what the formulas need.
template <class T>
QuantParams<T> compute_params_ref(const Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic>& x, const QuantSpec& spec) {
  const Eigen::Index pr = spec.param_rows(x.rows());
  const Eigen::Index pc = spec.param_cols(x.cols());
  Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic> lo = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic>::Constant(
      pr, pc, std::numeric_limits<T>::infinity());
  Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic> hi = -lo;
  for (Eigen::Index r = 0; r < x.rows(); ++r) {
    for (Eigen::Index c = 0; c < x.cols(); ++c) {
      Eigen::Index i, j;
      param_index_ref(spec, r, c, i, j);
      lo(i, j) = std::min(lo(i, j), x(r, c));
      hi(i, j) = std::max(hi(i, j), x(r, c));
    }
  }
  const T clip = static_cast<T>(spec.clip_ratio);
  QuantParams<T> p;
  p.scale.resize(pr, pc);
  p.zero.resize(pr, pc);
  for (Eigen::Index i = 0; i < pr; ++i) {
    for (Eigen::Index j = 0; j < pc; ++j) {
      T s;
      T z = 0;
      if (spec.symmetric) {
        const T absmax = std::max(std::fabs(lo(i, j)), std::fabs(hi(i, j)));
        // docs/design.md §2: max|x| ↦ 2^(b−1) − 1; full range (GPTQ's reference): the
        // reference's (xmax − xmin)/maxq with xmin = −xmax.
        s = spec.symmetric_full_range ? (clip * absmax + clip * absmax) / static_cast<T>(std::pow(2, spec.bits) - 1)
                                      : (clip * absmax) / static_cast<T>(std::pow(2, spec.bits - 1) - 1);
        if (s == 0) s = 1;
      } else {
        if (spec.range_includes_zero) {  // GPTQ's reference: [min(lo, 0), max(hi, 0)]
          if (lo(i, j) > 0) lo(i, j) = 0;
          if (hi(i, j) < 0) hi(i, j) = 0;
        }
        const T levels = static_cast<T>(std::pow(2, spec.bits) - 1);
        s = (clip * hi(i, j) - clip * lo(i, j)) / levels;
        if (std::isinf(s)) s = clip * hi(i, j) / levels - clip * lo(i, j) / levels;
        if (s == 0) {
          const T v = std::fabs(hi(i, j)) >= std::fabs(lo(i, j)) ? hi(i, j) : lo(i, j);
          s = v == 0 ? T(1) : std::fabs(v);
          z = std::nearbyint(-v / s);
          if (spec.range_includes_zero && z < 0) z = 0;  // v > 0 at code 1, zero kept in range
        } else {
          z = std::nearbyint(-(clip * lo(i, j)) / s);
        }
      }
      p.scale(i, j) = s;
      p.zero(i, j) = z;
    }
  }
  return p;
}

/// Reference integer codes, as T.
template <class T>
Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic> quantize_ref(const Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic>& x,
                                                              const QuantParams<T>& p, const QuantSpec& spec) {
  const T qmin = spec.symmetric ? -std::pow(T(2), spec.bits - 1) : T(0);
  const T qmax = spec.symmetric ? std::pow(T(2), spec.bits - 1) - 1 : std::pow(T(2), spec.bits) - 1;
  Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic> q(x.rows(), x.cols());
  for (Eigen::Index r = 0; r < x.rows(); ++r) {
    for (Eigen::Index c = 0; c < x.cols(); ++c) {
      Eigen::Index i, j;
      param_index_ref(spec, r, c, i, j);
      q(r, c) = std::clamp(std::nearbyint(x(r, c) / p.scale(i, j)) + p.zero(i, j), qmin, qmax);
    }
  }
  return q;
}

/// Reference fake quantization (q − z)·s.
template <class T>
Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic> fake_quantize_ref(
    const Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic>& x, const QuantParams<T>& p, const QuantSpec& spec) {
  Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic> y = quantize_ref(x, p, spec);
  for (Eigen::Index r = 0; r < x.rows(); ++r) {
    for (Eigen::Index c = 0; c < x.cols(); ++c) {
      Eigen::Index i, j;
      param_index_ref(spec, r, c, i, j);
      y(r, c) = (y(r, c) - p.zero(i, j)) * p.scale(i, j);
    }
  }
  return y;
}

}  // namespace oq::quant
