// oq/analysis/moments.hpp: streaming, mergeable moments per channel.
//
// Calibration data arrives in batches (tokens × channels); a user should not
// have to hold it all. ChannelMoments keeps, for every channel j, the count n,
// the mean, the central sums M2 = Σ(x − mean)², M3, M4, the largest |x| and
// Σ|x|, and merges batches with the pairwise formulas of Chan et al. (1979)
// and Pébay (2008, eqs. 2.1–2.3 for order 4). A batch's own moments are taken
// in two passes (mean, then central sums), everything in double: raw power
// sums Σx⁴ would cancel catastrophically for channels whose mean is large
// compared with their spread (DESIGN §3).
//
//   oq::analysis::ChannelMoments stats(4096);
//   for (const auto& batch : calibration) stats.update(batch);   // batch: tokens × 4096
//   Eigen::VectorXd peak = stats.absmax(), k = stats.kurtosis();
//
// Merging is associative up to rounding, so per-thread statistics can be
// merged in any order (merge()).
#pragma once

#include <oq/detail/check.hpp>

#include <Eigen/Core>

#include <cmath>
#include <string_view>

namespace oq::analysis {

class ChannelMoments {
 public:
  using Vector = Eigen::VectorXd;

  ChannelMoments() = default;
  /// Empty statistics of `channels` channels (channels >= 0).
  explicit ChannelMoments(Eigen::Index channels) {
    detail::require(channels >= 0, "oq::analysis::ChannelMoments", "channels must be >= 0, got ", channels);
    mean_ = m2_ = m3_ = m4_ = absmax_ = sum_abs_ = Vector::Zero(channels);
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
    // Row by row with channel-length accumulators: no batch-sized temporaries
    // (allocating and faulting in those cost more than the arithmetic), and
    // contiguous reads for the usual row-major activations.
    const Eigen::Index n = x.rows(), c = channels();
    ChannelMoments batch(c);
    batch.count_ = n;
    Eigen::ArrayXd sum = Eigen::ArrayXd::Zero(c), row(c), d(c), d2(c);
    for (Eigen::Index r = 0; r < n; ++r) sum += x.row(r).transpose().template cast<double>().array();
    batch.mean_ = (sum / static_cast<double>(n)).matrix();
    for (Eigen::Index r = 0; r < n; ++r) {
      row = x.row(r).transpose().template cast<double>().array();
      d = row - batch.mean_.array();
      d2 = d.square();
      batch.m2_.array() += d2;
      batch.m3_.array() += d2 * d;
      batch.m4_.array() += d2.square();
      batch.absmax_.array() = batch.absmax_.array().max(row.abs());
      batch.sum_abs_.array() += row.abs();
    }
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
    const double n = na + nb;
    const Eigen::ArrayXd delta = (other.mean_ - mean_).array();
    const Eigen::ArrayXd delta2 = delta.square();
    const Eigen::ArrayXd m2a = m2_.array(), m2b = other.m2_.array();
    const Eigen::ArrayXd m3a = m3_.array(), m3b = other.m3_.array();
    // Pébay (2008), eqs. 2.1–2.3, with δ = mean_b − mean_a.
    m4_.array() = m4_.array() + other.m4_.array() +
                  delta2.square() * (na * nb * (na * na - na * nb + nb * nb) / (n * n * n)) +
                  6.0 * delta2 * (na * na * m2b + nb * nb * m2a) / (n * n) + 4.0 * delta * (na * m3b - nb * m3a) / n;
    m3_.array() = m3a + m3b + delta2 * delta * (na * nb * (na - nb) / (n * n)) + 3.0 * delta * (na * m2b - nb * m2a) / n;
    m2_.array() = m2a + m2b + delta2 * (na * nb / n);
    mean_.array() += delta * (nb / n);
    absmax_ = absmax_.cwiseMax(other.absmax_);
    sum_abs_ += other.sum_abs_;
    count_ += other.count_;
  }

  Eigen::Index channels() const { return mean_.size(); }
  /// Tokens seen so far.
  Eigen::Index count() const { return count_; }

  const Vector& absmax() const { return absmax_; }
  Vector mean_abs() const { return sum_abs_ / denominator("mean_abs"); }
  const Vector& mean() const {
    denominator("mean");
    return mean_;
  }
  /// Biased (population) variance m2 = M2/n.
  Vector variance() const { return m2_ / denominator("variance"); }
  Vector stddev() const { return variance().cwiseSqrt(); }
  /// Kurtosis m4 / (m2² + ε) per channel (biased moments, DESIGN §3); a
  /// constant channel with ε = 0 gives 0/0 = NaN, reported as 0 (no tails).
  Vector kurtosis(double epsilon = 0.0) const {
    detail::require(epsilon >= 0.0 && std::isfinite(epsilon), "oq::analysis::ChannelMoments::kurtosis",
                    "epsilon must be finite and >= 0, got ", epsilon);
    const double n = denominator("kurtosis");
    const Eigen::ArrayXd m2 = m2_.array() / n;
    const Eigen::ArrayXd denom = m2.square() + epsilon;
    return (denom > 0.0).select((m4_.array() / n) / denom, 0.0).matrix();
  }

 private:
  double denominator(std::string_view what) const {
    detail::require(count_ > 0, "oq::analysis::ChannelMoments", what, " needs at least one token, got none");
    return static_cast<double>(count_);
  }

  Eigen::Index count_ = 0;
  Vector mean_, m2_, m3_, m4_, absmax_, sum_abs_;
};

}  // namespace oq::analysis
