// oq/analysis/moments.hpp: streaming, mergeable moments per channel.
//
// Calibration data arrives in batches (tokens × channels); a user should not
// have to hold it all. ChannelMoments keeps, for every channel j, the count n,
// the mean, the central sums M2 = Σ(x − mean)², M3, M4, the largest |x| and
// Σ|x|, and merges batches with the pairwise formulas of Chan et al. (1979)
// and Pébay (2008, eqs. 2.1–2.3 for order 4). A batch's own moments are taken
// in two passes (mean, then central sums), everything in double: raw power
// sums Σx⁴ would cancel catastrophically for channels whose mean is large
// compared with their spread (docs/design.md §3).
//
//   oq::analysis::ChannelMoments stats(4096);
//   for (const auto& batch : calibration) stats.update(batch);   // batch: tokens × 4096
//   Eigen::VectorXd peak = stats.absmax(), k = stats.kurtosis();
//
// Merging is associative up to rounding, so per-thread statistics can be
// merged in any order (merge()).
//
// Numerics. A batch's mean gets the correction of the "corrected two-pass
// algorithm" (Chan, Golub & LeVeque 1983): with S_k = Σ(x − mean)^k about the
// first-pass mean and c = S1/n (its rounding error, recovered), mean += c and
//     M2 = S2 − n·c²,  M3 = S3 − 3c·S2 + 2n·c³,  M4 = S4 − 4c·S3 + 6c²·S2 − 3n·c⁴,
// the binomial expansions of Σ(x − mean − c)^k. Without it, a mean off by its
// rounding error (≈ √n·u·|mean|) shifts every deviation, which matters when
// |mean| ≫ std: a skewed channel 1e9 + 1e−3·E² (E exponential, n = 1e5) had
// K = 90.24 for 89.36. For the same reason the mean is kept as an unevaluated
// sum of two doubles (hi + lo, Knuth's two-sum): Pébay's δ = mean_b − mean_a
// would otherwise carry half an ulp of |mean| per side (1.3e−5·std there),
// and K of that channel fed in 100-token batches was off by 1e−6 relative.
// Each channel's statistics are kept in units of 2^e, chosen from its max|x|
// = f·2^E, f ∈ [0.5, 1): the mean and Σ|x| in units of 2^e, M_k in units of
// 2^(k·e). Inside the window |E| ≤ 150 (max|x| from 2^−151 ≈ 3.5e−46 to
// 2^150 ≈ 1.4e45: every float) e = 0, and the statistics are plain float64
// sums: there d⁴ cannot overflow (|d| < 2^151, so M4 < 2^604·n < 2^667), and
// what matters cannot underflow (a channel that is not constant has max|d| ≥
// 2^(E−55), half its range, which is at least the ulp 2^(E−54) of entries ≥
// max|x|/2 or else above max|x|/2; so m2² ≥ (2^−410/n)² ≥ 2^−946 for n < 2^63,
// and a d⁴ that underflows is below 2^−202 of M4).
// Outside it e = E, and entries are scaled by 2^−e (exact: a power of two, for
// every entry within a factor 2^−1021 of max|x|) before the central sums, so
// d⁴ neither overflows (|x| ≳ 1e77) nor underflows (spreads ≲ 1e−77) anywhere
// in the float64 range, from subnormals to DBL_MAX. Both give the same bits:
// scaling by a power of two commutes with every rounding while the values stay
// normal, which is why ordinary data need not pay for the extremes (no
// scaling, and merges in vectorised array arithmetic while no channel of
// either side is scaled). A merge brings both sides to the units of the
// merged max|x| (e is non-decreasing in max|x|, so neither side's units
// exceed them), where what drops below the smallest double is far below the
// rounding of the rest. K, mean, stddev and mean |x| are as accurate at any
// magnitude as near 1 (2^k·x gives the same bits, scaled by 2^k); variance()
// is +inf or 0 where the variance itself is beyond float64 (|x| ≳ 1e154 or
// spreads ≲ 1e−162).
#pragma once

#include <oq/detail/check.hpp>
#include <oq/detail/power_of_two.hpp>

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string_view>

namespace oq::analysis {

class ChannelMoments {
 public:
  using Vector = Eigen::VectorXd;

  ChannelMoments() = default;
  /// Empty statistics of `channels` channels (channels >= 0).
  explicit ChannelMoments(Eigen::Index channels) {
    detail::require(channels >= 0, "oq::analysis::ChannelMoments", "channels must be >= 0, got ", channels);
    mean_ = absmax_ = Vector::Zero(channels);
    scaled_mean_ = mean_low_ = m2_ = m3_ = m4_ = sum_abs_ = Eigen::ArrayXd::Zero(channels);
  }

  /// Adds a batch x (tokens × channels). An empty batch (0 rows) changes nothing.
  /// Throws std::invalid_argument on a channel-count mismatch and
  /// std::domain_error naming the first NaN/Inf entry.
  template <class Derived>
  void update(const Eigen::MatrixBase<Derived>& x) {
    constexpr std::string_view kWhere = "oq::analysis::ChannelMoments::update";
    detail::require(x.cols() == channels(), kWhere, "x must have ", channels(), " columns (channels), got ",
                    x.cols());
    if (x.rows() == 0) return;
    detail::require_finite(x, kWhere, "x");
    ChannelMoments batch(channels());
    batch.count_ = x.rows();
    for (Eigen::Index first = 0; first < channels(); first += kBlock)
      batch.set_block(x.middleCols(first, std::min(kBlock, channels() - first)), first);
    batch.mean_ = batch.in_units(batch.scaled_mean_, 1);
    merge(batch);
  }

  /// Combines another set of statistics of the same channels into this one.
  void merge(const ChannelMoments& other) {
    detail::require(other.channels() == channels(), "oq::analysis::ChannelMoments::merge",
                    "other must have ", channels(), " channels, got ", other.channels());
    if (other.count_ == 0) return;
    if (count_ == 0) {
      *this = other;
      return;
    }
    const double na = static_cast<double>(count_);
    const double nb = static_cast<double>(other.count_);
    if (!scaled_ && !other.scaled_) {
      // Both sides in units of 1, and so is the union (its max|x| is one of
      // theirs): all channels at once.
      pebay(na, nb, scaled_mean_, mean_low_, m2_, m3_, m4_, other.scaled_mean_, other.mean_low_, other.m2_,
            other.m3_, other.m4_);
      sum_abs_ += other.sum_abs_;
      absmax_ = absmax_.cwiseMax(other.absmax_);
      mean_ = scaled_mean_.matrix();
    } else {
      bool scaled = false;
      for (Eigen::Index j = 0; j < channels(); ++j) {
        // Both sides in the units of the merged max|x|: a quantity kept in
        // units of 2^(p·ea) is multiplied by 2^(p·(ea − e)), ea ≤ e as the
        // unit exponent is non-decreasing in max|x| (a side whose max|x| is 0,
        // where ea = 0 may exceed e, holds zeros only).
        const double absmax = std::max(absmax_[j], other.absmax_[j]);
        const int e = unit_exponent(absmax);
        const int sa = unit_exponent(absmax_[j]) - e, sb = unit_exponent(other.absmax_[j]) - e;
        double mean = std::ldexp(scaled_mean_[j], sa), low = std::ldexp(mean_low_[j], sa);
        double m2 = std::ldexp(m2_[j], 2 * sa), m3 = std::ldexp(m3_[j], 3 * sa), m4 = std::ldexp(m4_[j], 4 * sa);
        pebay(na, nb, mean, low, m2, m3, m4, std::ldexp(other.scaled_mean_[j], sb),
              std::ldexp(other.mean_low_[j], sb), std::ldexp(other.m2_[j], 2 * sb),
              std::ldexp(other.m3_[j], 3 * sb), std::ldexp(other.m4_[j], 4 * sb));
        scaled_mean_[j] = mean;
        mean_low_[j] = low;
        m2_[j] = m2;
        m3_[j] = m3;
        m4_[j] = m4;
        sum_abs_[j] = std::ldexp(sum_abs_[j], sa) + std::ldexp(other.sum_abs_[j], sb);
        absmax_[j] = absmax;
        mean_[j] = std::ldexp(mean, e);
        scaled = scaled || e != 0;
      }
      scaled_ = scaled;
    }
    count_ += other.count_;
  }

  Eigen::Index channels() const { return mean_.size(); }
  /// Tokens seen so far.
  Eigen::Index count() const { return count_; }

  const Vector& absmax() const { return absmax_; }
  Vector mean_abs() const { return in_units(sum_abs_ / denominator("mean_abs"), 1); }
  const Vector& mean() const {
    denominator("mean");
    return mean_;
  }
  /// Biased (population) variance m2 = M2/n; +inf where it exceeds float64
  /// (|x| ≳ 1e154; stddev() is still finite there).
  Vector variance() const { return in_units(m2_ / denominator("variance"), 2); }
  Vector stddev() const { return in_units((m2_ / denominator("stddev")).sqrt(), 1); }
  /// Kurtosis m4 / (m2² + ε) per channel (biased moments, docs/design.md §3); a
  /// constant channel with ε = 0 gives 0/0 = NaN, reported as 0 (no tails).
  Vector kurtosis(double epsilon = 0.0) const {
    detail::require(epsilon >= 0.0 && std::isfinite(epsilon), "oq::analysis::ChannelMoments::kurtosis",
                    "epsilon must be finite and >= 0, got ", epsilon);
    const double n = denominator("kurtosis");
    // In the channel's units m_k' = m_k·2^(−k·e), so K = m4'/(m2'² + ε·2^(−4e)).
    // ε·2^(−4e) may overflow to +inf (ε ≫ m2²), which correctly gives K = 0.
    const Eigen::ArrayXd m2 = m2_ / n;
    const Eigen::ArrayXd denom = m2.square() + in_units(Eigen::ArrayXd::Constant(channels(), epsilon), -4).array();
    return (denom > 0.0).select((m4_ / n) / denom, 0.0).matrix();
  }

 private:
  double denominator(std::string_view what) const {
    detail::require(count_ > 0, "oq::analysis::ChannelMoments", what, " needs at least one token, got none");
    return static_cast<double>(count_);
  }

  // A batch's statistics are taken a block of channels at a time, row by row
  // with block-length accumulators: no batch-sized temporaries (allocating and
  // faulting in those cost more than the arithmetic), contiguous reads for the
  // usual row-major activations, and the work stays in cache. Each Eigen
  // statement of a row is one sweep over its arrays, and the ≤ 9 arrays a pass
  // sweeps are 36 KiB for 512 channels, within L1; for all 4096 channels of a
  // LLaMA-7B activation they would be 288 KiB, streamed from L2 on every
  // statement, which made update() 1.5× slower (256 channels measured about as
  // fast as 512, 128 slower again from per-statement overhead, 1024 slower).
  static constexpr Eigen::Index kBlock = 512;

  // Sets channels first, ..., first + x.cols() − 1 of this batch's
  // statistics from x (all of the batch's tokens, those channels): two
  // passes, then the corrected two-pass term (file comment).
  template <class Derived>
  void set_block(const Eigen::MatrixBase<Derived>& x, Eigen::Index first) {
    const Eigen::Index n = x.rows(), c = x.cols();
    const double count = static_cast<double>(n);
    constexpr double kInf = std::numeric_limits<double>::infinity();
    Eigen::ArrayXd sum = Eigen::ArrayXd::Zero(c), lo = Eigen::ArrayXd::Constant(c, kInf),
                   hi = Eigen::ArrayXd::Constant(c, -kInf), row(c), d(c), d2(c);
    // Pass 1: sum, min and max per channel.
    for (Eigen::Index r = 0; r < n; ++r) {
      row = x.row(r).transpose().template cast<double>().array();
      sum += row;
      lo = lo.min(row);
      hi = hi.max(row);
    }
    const Eigen::ArrayXd absmax = hi.abs().max(lo.abs());
    absmax_.segment(first, c) = absmax.matrix();
    const Eigen::Array<bool, Eigen::Dynamic, 1> constant = lo == hi;
    // The units 2^e of every channel (file comment), applied as two factors
    // (2^−e alone overflows for subnormal channels, e < −1022); only where
    // some channel's max|x| is outside the window, so that ordinary data
    // never pays for the multiplications.
    const bool scaled = !in_window(absmax).all();
    scaled_ = scaled_ || scaled;
    Eigen::ArrayXd f1, f2;
    if (scaled) {
      f1.resize(c);
      f2.resize(c);
      for (Eigen::Index j = 0; j < c; ++j) {
        const auto factors = detail::inverse_power_of_two<double>(unit_exponent(absmax[j]));
        f1[j] = factors.first;
        f2[j] = factors.second;
      }
    }
    const auto to_units = [&](Eigen::ArrayXd& v) {
      if (scaled) v = (v * f1) * f2;
    };
    const auto load = [&](Eigen::Index r) {
      row = x.row(r).transpose().template cast<double>().array();
      to_units(row);
    };
    // The first-pass mean in those units. The plain sum overflows only for
    // entries near DBL_MAX (scaled channels); then the scaled entries are
    // summed instead.
    Eigen::ArrayXd mean = sum / count;
    if (sum.allFinite()) {
      to_units(mean);
    } else {
      sum.setZero();
      for (Eigen::Index r = 0; r < n; ++r) {
        load(r);
        sum += row;
      }
      mean = sum / count;
    }
    // Pass 2: central sums about it, and Σ|x|, in the channel's units.
    Eigen::ArrayXd s1 = Eigen::ArrayXd::Zero(c), s2 = s1, s3 = s1, s4 = s1, sum_abs = s1;
    for (Eigen::Index r = 0; r < n; ++r) {
      load(r);
      d = row - mean;
      d2 = d.square();
      s1 += d;
      s2 += d2;
      s3 += d2 * d;
      s4 += d2.square();
      sum_abs += row.abs();
    }
    // The corrected two-pass term (file comment). A constant channel gets exact
    // zeros: its mean is the value itself, not the value plus rounding noise.
    const Eigen::ArrayXd k = s1 / count;
    const Eigen::ArrayXd k2 = k.square();
    Eigen::ArrayXd mean_hi, mean_lo;
    two_sum(mean, k, mean_hi, mean_lo);
    to_units(lo);
    scaled_mean_.segment(first, c) = constant.select(lo, mean_hi);
    mean_low_.segment(first, c) = constant.select(0.0, mean_lo);
    m2_.segment(first, c) = constant.select(0.0, (s2 - k * s1).max(0.0));
    m3_.segment(first, c) = constant.select(0.0, s3 - 3.0 * k * s2 + 2.0 * count * k2 * k);
    m4_.segment(first, c) =
        constant.select(0.0, (s4 - 4.0 * k * s3 + 6.0 * k2 * s2 - 3.0 * count * k2.square()).max(0.0));
    sum_abs_.segment(first, c) = sum_abs;
  }

  // s + t = a + b exactly, s = fl(a + b) (Knuth's two-sum), for one channel
  // (T = double) or all (T = Eigen::ArrayXd); s must not alias a or b.
  template <class T>
  static void two_sum(const T& a, const T& b, T& s, T& t) {
    s = a + b;
    const T b_rounded = s - a;
    t = (a - (s - b_rounded)) + (b - b_rounded);
  }

  // Pébay (2008), eqs. 2.1–2.3: side a (mean + low, M2, M3, M4, na tokens)
  // becomes a ∪ b, both in the same units; for one channel (T = double) or
  // all (T = Eigen::ArrayXd), with the same operations in the same order.
  template <class T>
  static void pebay(double na, double nb, T& mean, T& low, T& m2, T& m3, T& m4, const T& mean_b, const T& low_b,
                    const T& m2b, const T& m3b, const T& m4b) {
    const double n = na + nb;
    // δ = mean_b − mean_a, each hi + lo.
    const T delta = (mean_b - mean) + (low_b - low);
    const T delta2 = delta * delta;
    m4 = m4 + m4b + delta2 * delta2 * (na * nb * (na * na - na * nb + nb * nb) / (n * n * n)) +
         6.0 * delta2 * (na * na * m2b + nb * nb * m2) / (n * n) + 4.0 * delta * (na * m3b - nb * m3) / n;
    m3 = m3 + m3b + delta2 * delta * (na * nb * (na - nb) / (n * n)) + 3.0 * delta * (na * m2b - nb * m2) / n;
    m2 = m2 + m2b + delta2 * (na * nb / n);
    // mean_a + δ·nb/n, again as hi + lo: two-sum, then renormalised.
    const T step = delta * (nb / n);
    T hi, lo;
    two_sum(mean, step, hi, lo);
    const T lo_sum = lo + low;
    two_sum(hi, lo_sum, mean, low);
  }

  // Whether a channel's units are 1: max|x| = f·2^E with |E| ≤ 150, or 0
  // (file comment); for one max|x| or for all channels at once. Declared
  // with their types (no deduced return type) because clang does not allow a
  // member with a deduced return type to be used above its definition.
  static bool in_window(double absmax) { return (absmax >= 0x1p-151 && absmax < 0x1p150) || absmax == 0.0; }
  static Eigen::Array<bool, Eigen::Dynamic, 1> in_window(const Eigen::ArrayXd& absmax) {
    return (absmax >= 0x1p-151 && absmax < 0x1p150) || absmax == 0.0;
  }

  // The channel's unit exponent e: 0 in the window, else E with max|x| = f·2^E.
  static int unit_exponent(double absmax) {
    if (in_window(absmax)) return 0;
    int e = 0;
    std::frexp(absmax, &e);
    return e;
  }

  // v_j·2^(power·e_j), from channel units back to x's.
  Vector in_units(const Eigen::ArrayXd& v, int power) const {
    if (!scaled_) return v.matrix();
    Vector out(v.size());
    for (Eigen::Index j = 0; j < v.size(); ++j) out[j] = std::ldexp(v[j], power * unit_exponent(absmax_[j]));
    return out;
  }

  Eigen::Index count_ = 0;
  bool scaled_ = false;  // some channel's units are not 1
  // mean_ and absmax_ in x's units; the rest in each channel's units (file
  // comment): the mean scaled_mean_ + mean_low_ and sum_abs_ in 2^e, m2_, m3_,
  // m4_ (M2, M3, M4) in 2^(k·e).
  Vector mean_, absmax_;
  Eigen::ArrayXd scaled_mean_, mean_low_, m2_, m3_, m4_, sum_abs_;
};

}  // namespace oq::analysis
