// oq/transform/duquant_rotation.hpp: DuQuant's base block matrix and greedy
// block rotation (docs/design.md §6; Lin et al. 2024, §3.1 and Algorithm 1).
//
// Base block matrix of size b:
//   R = E·(G_(b−2)⋯G_1·G_0)·E, G_i the Givens rotation of the plane (i, i+1)
//       with G_i(i,i) = G_i(i+1,i+1) = cos = 1/√(i+2), G_i(i+1,i) = sin =
//       √(i+1)/√(i+2), G_i(i,i+1) = −sin, and E the exchange of indices 0 and
//       b−1 (rows and columns). Row b−1 of the Givens product is uniformly
//       1/√b, so row 0 of R is: x·R spreads the value in channel 0 evenly over
//       the block.
//   B = R·diag(1, Q′) with Q′ a (b−1)×(b−1) orthogonal matrix (random in the
//       paper; passed in here so that B is a pure function of its inputs).
// This is the released code's construction (get_rot.py, utils.get_rot).
//
// Greedy rotation (Algorithm 1), on the activations viewed as blocks: X
// (tokens × C) reshaped row-major to (tokens·C/b) × b, so every row is one
// block of one token and all blocks share one rotation. For t = 1..N: find the
// entry of largest |x|; its column d is the outlier's channel within its
// block; right-multiply by E_d·B·E_d (E_d exchanges indices 0 and d) — which
// moves channel d to 0, spreads it, and moves it back. Scores s_0..s_N are
// recorded before each step and after the last; the rotation kept is the
// product of the first k steps, k = argmin s (first minimum), projected onto
// the orthogonal matrices in double before it is rounded to the scalar type
// (detail_rotation::project_orthogonal: a float B's rounding would otherwise
// accumulate over the steps). The rotated
// tensor is never stored: each step evaluates x_i·A_t (A_t the product of the
// steps so far) only for the rows whose norm can reach the extremes
// (detail_rotation::NormOrderedRows), which gives the same scores and pivots
// as rotating the whole tensor step by step, to rounding. The rows are
// multiplied on GreedyRotationOptions::threads threads by a kernel that
// reduces each register tile to the step's statistics
// (detail_rotation::BlockKernel), every entry in one fixed order of its sum:
// the result is the same, bit for bit, on any number of threads.
//
// Where oq departs from the released code (quantize/quantizer.py, rotation()):
// the release pivots on `exchange_id % block_size` with exchange_id the ROW of
// the reshaped tensor (a token-block index), not the outlier's channel; oq
// pivots on the channel as the paper says (docs/design.md §6). Ties for the largest
// |x| go to the first entry in row-major order of the blocked view, and
// between +v and −v to +v. The release scores by
// max − min of the whole tensor (GreedyScore::kRange, the default here);
// GreedyScore::kAbsMax scores by max |x|.
//
// Weight-aware score (GreedyScore::kActivationTimesWeight; the overload that
// takes the weights W, out × C, of the linear that reads x). The weights are
// viewed as blocks the same way and rotated along with the activations (they
// are folded with the same rotation, W·R). Per step, for every position j of
// the block, a_j = max |x| over the blocked activations' column j and w_j =
// max |w| over the blocked weights' column j; the pivot is the first j of
// largest a_j·w_j and that product is the step's score. a_j·w_j bounds every
// entry of the channels' rank-one contributions x_j·w_jᵀ to X·Wᵀ, so the
// rotation goes after the channels whose quantization error reaches the
// output most, not only the largest activations. The released code has the
// skeleton of this path (rotation(weight, other, score_func):
// score_func(act_max, weight_max).argmax() over the block's positions) but
// never takes it: online_duquant_cali calls rotation(weight) without a score
// function, the release defines none, and the branch reads variables (c, r2,
// c2) that only the other branch sets. The product is oq's choice.
#pragma once

#include <oq/cpu/parallel.hpp>
#include <oq/detail/check.hpp>
#include <oq/detail/eigen_types.hpp>

#include <Eigen/Core>
#include <Eigen/SVD>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <numeric>
#include <optional>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <utility>
#include <vector>

namespace oq::transform {

using ::oq::detail::DenseMatrix;  // oq/detail/eigen_types.hpp
using ::oq::detail::RowMajorMatrix;

/// R = E·(G_(b−2)⋯G_0)·E of the file comment (b >= 2); orthogonal, row 0 uniform.
template <class Scalar = double>
DenseMatrix<Scalar> givens_spread_matrix(Eigen::Index b) {
  detail::require(b >= 2, "oq::transform::givens_spread_matrix", "b must be >= 2, got ", b);
  // Accumulate in double: the product of b−1 rotations, then round once.
  DenseMatrix<double> m = DenseMatrix<double>::Identity(b, b);
  for (Eigen::Index i = 0; i + 1 < b; ++i) {
    const double c = 1.0 / std::sqrt(static_cast<double>(i + 2));
    const double s = std::sqrt(static_cast<double>(i + 1)) / std::sqrt(static_cast<double>(i + 2));
    // m ← G_i·m touches rows i and i+1 only.
    const Eigen::RowVectorXd row_i = m.row(i), row_next = m.row(i + 1);
    m.row(i) = c * row_i - s * row_next;
    m.row(i + 1) = s * row_i + c * row_next;
  }
  m.row(0).swap(m.row(b - 1));
  m.col(0).swap(m.col(b - 1));
  return m.cast<Scalar>();
}

namespace detail_rotation {

// max |QᵀQ − I| over the entries, computed in double (0 for an empty q).
template <class Derived>
double orthogonality_error(const Eigen::MatrixBase<Derived>& q) {
  if (q.size() == 0) return 0.0;
  const DenseMatrix<double> qd = q.template cast<double>();
  return (qd.transpose() * qd - DenseMatrix<double>::Identity(qd.cols(), qd.cols())).cwiseAbs().maxCoeff();
}

// require_orthogonal's tolerance for an n×n matrix of Scalar (its comment).
template <class Scalar>
double orthogonality_tolerance(Eigen::Index n) {
  const double size = static_cast<double>(n);
  return 8.0 * std::sqrt(size) * static_cast<double>(std::numeric_limits<Scalar>::epsilon()) +
         size * std::numeric_limits<double>::epsilon();
}

// m ← its orthogonal polar factor U·Vᵀ (m = U·Σ·Vᵀ), the orthogonal matrix
// nearest to m in the Frobenius norm (Higham, "Functions of Matrices", 2008,
// Theorem 8.4), in double. Near-orthogonal m (‖mᵀm − I‖_F ≤ 1/2, which
// bounds the spectral norm that must stay below 1) takes Newton–Schulz,
// m ← m·(3I − mᵀm)/2 (ibid. §8.3): quadratic convergence at two b×b products
// an iteration, moving m by about its drift. It stops at the rounding floor
// (b·ε of double, or once an iteration no longer halves the error), keeping
// the better iterate, or after 8 iterations, ample from a drift of 1/2.
// Anything farther takes an SVD (BDCSVD: O(b³) with a large constant;
// seconds at b = 1024, about a minute at 4096).
//
// A template only so that nothing is instantiated where it is not called:
// as an inline function of DenseMatrix<double> it made every translation
// unit that includes this header instantiate Eigen::BDCSVD (with JacobiSVD,
// ColPivHouseholderQR and the bidiagonalization under it), most of the
// 13 s and 840 MB that including <oq/duquant.hpp> alone cost with GCC 12
// (bench/compile_cost.sh, bench/RESULTS.md). Matrix is DenseMatrix<double>
// (asserted), so the arithmetic is the same as before.
template <class Matrix>
void project_orthogonal(Matrix& m) {
  static_assert(std::is_same_v<Matrix, DenseMatrix<double>>, "project_orthogonal works in double");
  const Eigen::Index b = m.rows();
  const Matrix identity = Matrix::Identity(b, b);
  Matrix gram = m.transpose() * m;
  double error = (gram - identity).norm();
  if (!(error <= 0.5)) {
    const Eigen::BDCSVD<Matrix> svd(m, Eigen::ComputeFullU | Eigen::ComputeFullV);
    m = svd.matrixU() * svd.matrixV().transpose();
    return;
  }
  const double stop = static_cast<double>(b) * std::numeric_limits<double>::epsilon();
  for (int iteration = 0; iteration < 8 && error > stop; ++iteration) {
    Matrix next = m * (1.5 * identity - 0.5 * gram);
    gram.noalias() = next.transpose() * next;
    const double next_error = (gram - identity).norm();
    if (!(next_error < 0.5 * error)) return;  // the rounding floor: m is the better one
    m = std::move(next);
    error = next_error;
  }
}

#if defined(OQ_EXTERN_TEMPLATES)
extern template void project_orthogonal<DenseMatrix<double>>(DenseMatrix<double>&);
#endif

}  // namespace detail_rotation

/// Throws std::invalid_argument unless q is square n×n and QᵀQ = I to a
/// tolerance of 8·√n·ε of its scalar type plus n·ε of double.
///
/// The terms: an orthogonal matrix rounded once to the scalar type is off by
/// at most 2u + u² ≈ ε (Cauchy–Schwarz on the entries' relative errors), any
/// n; one formed by products in the scalar type (a float QR, B = R·diag(1, Q′)
/// in float) adds dot-product rounding, about √n·u in practice (Higham,
/// "Accuracy and Stability of Numerical Algorithms", §3.1 and §3.5); and QᵀQ
/// is computed here in double, whose own rounding is at most γ_n ≈ n·u of
/// double (ibid., Lemma 3.1): it dominates for double input. The greedy
/// rotation is projected onto the orthogonal matrices before it is rounded
/// (detail_rotation::project_orthogonal), so its step count does not enter.
/// Measured, b = 2..512 (every b to 128 with 1024 greedy steps; every 8th
/// beyond, and 129, 255, 257, 383, 511, with 256), max |QᵀQ − I| over oq's
/// own rotations — random_orthogonal, hadamard_orthogonal, duquant_base_block,
/// the greedy rotation, a transform saved and loaded: float 1.40ε (the base
/// block at b = 4), double 58ε (hadamard_orthogonal at b = 496, the check's
/// own rounding); each kind at least 8.4× below the tolerance at its size
/// (float: 11.5×). An Eigen HouseholderQR in float reached 5.7ε, 8.5× below.
/// A matrix off by 1.0007 (float: 1.4e-3) or 1.001 (double) is rejected at
/// any n up to the 65536 of duquant_io.hpp (float tolerance 2.4e-4 there).
template <class Derived>
void require_orthogonal(const Eigen::MatrixBase<Derived>& q, Eigen::Index n, std::string_view where,
                        std::string_view name) {
  using Scalar = typename Derived::Scalar;
  detail::require(q.rows() == n && q.cols() == n, where, name, " must be ", n, " x ", n, ", got ", q.rows(), " x ",
                  q.cols());
  detail::require_finite(q, where, name);
  const double tolerance = detail_rotation::orthogonality_tolerance<Scalar>(n);
  const double error = detail_rotation::orthogonality_error(q);
  detail::require(error <= tolerance, where, name, " must be orthogonal (max |QᵀQ − I| <= ", tolerance, "), got ",
                  error, "; a rotation computed in lower precision (float or TF32 products) can be projected with "
                  "oq::transform::nearest_orthogonal");
}

/// The orthogonal matrix nearest to m in the Frobenius norm: the polar factor
/// U·Vᵀ of m = U·Σ·Vᵀ (Higham, "Functions of Matrices", 2008, Theorem 8.4),
/// computed in double and rounded once to m's scalar type. For rotations made
/// elsewhere — products of many steps in float, or in TF32 where a framework
/// enables it for matrix products, drift from orthogonality by more than
/// require_orthogonal accepts — before they build a DuQuantTransform:
/// the projection moves m by about its drift, so the transform stays the
/// rotation m was meant to be, and becomes exactly invertible by its
/// transpose. A drifted rotation costs a few b×b products (Newton–Schulz);
/// a matrix far from orthogonal an SVD (detail_rotation::project_orthogonal).
/// Throws std::invalid_argument for an empty or non-square m and
/// std::domain_error for a NaN/Inf entry.
template <class Derived>
DenseMatrix<typename Derived::Scalar> nearest_orthogonal(const Eigen::MatrixBase<Derived>& m) {
  constexpr std::string_view kWhere = "oq::transform::nearest_orthogonal";
  detail::require(m.rows() > 0 && m.rows() == m.cols(), kWhere, "m must be square and non-empty, got ", m.rows(),
                  " x ", m.cols());
  detail::require_finite(m, kWhere, "m");
  DenseMatrix<double> q = m.template cast<double>();
  detail_rotation::project_orthogonal(q);
  return q.template cast<typename Derived::Scalar>();
}

/// B = R·diag(1, Q′) for block size b = q_prime.rows() + 1.
template <class Derived>
DenseMatrix<typename Derived::Scalar> duquant_base_block(const Eigen::MatrixBase<Derived>& q_prime) {
  using Scalar = typename Derived::Scalar;
  const Eigen::Index b = q_prime.rows() + 1;
  detail::require(b >= 2, "oq::transform::duquant_base_block", "q_prime must be at least 1 x 1");
  require_orthogonal(q_prime, b - 1, "oq::transform::duquant_base_block", "q_prime");
  const DenseMatrix<Scalar> r = givens_spread_matrix<Scalar>(b);
  DenseMatrix<Scalar> out(b, b);
  out.col(0) = r.col(0);
  out.rightCols(b - 1).noalias() = r.rightCols(b - 1) * q_prime;
  return out;
}

enum class GreedyScore {
  kRange,                 ///< max x − min x of the whole tensor (the released code)
  kAbsMax,                ///< max |x|
  kActivationTimesWeight, ///< max_j a_j·w_j over block positions (needs the weights; file comment)
};

inline constexpr bool needs_weights(GreedyScore s) { return s == GreedyScore::kActivationTimesWeight; }

/// The most greedy steps one rotation may try: 256× the paper's N = 256.
/// The bound keeps an untrusted count from reserving pivots and scores for
/// INT_MAX steps (32 GiB) and running for ever: every step costs at least a
/// b×b product.
inline constexpr int kMaxGreedySteps = 1 << 16;

struct GreedyRotationOptions {
  int steps = 256;  ///< N, greedy steps tried, in [0, kMaxGreedySteps]
  GreedyScore score = GreedyScore::kRange;
  /// Called after every step with (steps done, steps in all); may be empty.
  std::function<void(int, int)> progress{};
  /// Threads for the steps' products (0: all hardware threads). The result
  /// is the same, bit for bit, for every thread count.
  int threads = 0;
  /// A pool the caller owns (oq/cpu/thread_pool.hpp) to run on instead of
  /// starting threads per call; threads must then be 0. Not one whose task
  /// is making this call (a pool runs one job at a time).
  cpu::ThreadPool* pool = nullptr;
};

template <class Scalar>
struct GreedyRotation {
  DenseMatrix<Scalar> rotation;       ///< b × b, the product of the kept steps
  std::vector<Eigen::Index> pivots;   ///< channel within the block, every step tried
  std::vector<double> scores;         ///< steps + 1 scores: before each step, after the last
  Eigen::Index kept = 0;              ///< steps kept (argmin of scores)
};

namespace detail_rotation {

// Rows of the blocked view per GEMM of rotate_blocks_in_place: large enough
// for Eigen's (OpenMP-parallel) GEMM, small enough for a tile to stay in L2
// while it is copied back.
inline constexpr Eigen::Index kTileRows = 2048;

// The product kernel of the greedy's steps. Each step of Algorithm 1
// (Lin et al. 2024, §3.1) needs only statistics of Y_t = X_b·A_t (its
// extremes, or its columns' maxima of |y|), never Y_t itself, so the kernel
// keeps each register tile of Y_t in registers, folds it into per-column
// maxima and minima, and drops it: a GEMM whose epilogue is a reduction, at
// the rate of a GEMM (bench/RESULTS.md), without storing and rereading a
// tile. Every entry is one chain of multiply-adds in k order,
//   y_ij = (…((0 + x_i0·a_0j) + x_i1·a_1j) + …) + x_i(b−1)·a_(b−1)j,
// each step Eigen's pmadd (fused where the target has FMA), whatever the
// tile, the row's place in it and the thread that computes it: the results
// do not depend on the thread count.
//
// The previous implementation (an Eigen GEMM per tile of rows, one thread
// for the greedy) summed in the same order wherever Eigen's product took its
// register-tiled paths: measured equal bit for bit at b = 128 and 32 with
// AVX-512 + FMA, and at every b tried without FMA (SSE2, oq's test build),
// except tiles of one row (a GEMV). Elsewhere (Eigen's one-packet kernel
// splits the chain into even and odd k: b = 64 or 256 with AVX-512) the two
// are two orders of one float sum, which differ by at most
// 2·γ_b·Σ_k |x_ik|·|a_kj| ≤ 2·γ_b·‖x_i‖·‖a_j‖ per entry (γ_b = b·u/(1 − b·u);
// Higham, "Accuracy and Stability of Numerical Algorithms", §3.1): the
// extremes move by no more, kRange scores by twice that, and a pivot changes
// only where two channels' peaks lie that close (measured: no pivot changed;
// the test "float against float64" checks the bound).
template <class Scalar>
struct BlockKernel {
  using Packet = typename Eigen::internal::packet_traits<Scalar>::type;
  static constexpr int kLanes = Eigen::internal::unpacket_traits<Packet>::size;
  // Rows × packets of columns per register tile: 8 × 3 accumulators with
  // AVX-512's 32 vector registers (plus 3 for a row of A and one broadcast),
  // 4 × 3 with 16.
  static constexpr int kRows = EIGEN_ARCH_DEFAULT_NUMBER_OF_REGISTERS >= 32 ? 8 : 4;
  static constexpr int kPackets = 3;
};

// Blocked rows per unit of work: one thread computes a chunk at a time, and
// the lazy evaluation decides per chunk whether to compute it. 64 rows
// (32 KiB of float at b = 128) stay in L2 while every column panel of A_t
// passes over them.
inline constexpr Eigen::Index kChunkRows = 64;
static_assert(kChunkRows % BlockKernel<float>::kRows == 0 && kChunkRows % BlockKernel<double>::kRows == 0);

// A_t rounded to Scalar and laid out for the kernel: row-major with its b
// columns padded to whole packets by copies of column 0. The copies give
// every padded lane the values of column 0, so the maxima and minima over
// all lanes are those over the b columns and need no mask.
template <class Scalar>
class PackedRotation {
 public:
  using Kernel = BlockKernel<Scalar>;

  explicit PackedRotation(Eigen::Index b)
      : b_(b), packets_((b + Kernel::kLanes - 1) / Kernel::kLanes), data_(b * packets_ * Kernel::kLanes) {}

  /// a (b × b) into the layout; the column norms for the rows' bounds.
  void assign(const DenseMatrix<Scalar>& a) {
    const Eigen::Index stride = this->stride();
    for (Eigen::Index k = 0; k < b_; ++k) {
      Scalar* row = data_.data() + k * stride;
      for (Eigen::Index j = 0; j < b_; ++j) row[j] = a(k, j);
      for (Eigen::Index j = b_; j < stride; ++j) row[j] = a(k, 0);
    }
    column_norm_ = a.template cast<double>().colwise().norm().maxCoeff();
  }

  Eigen::Index b() const { return b_; }
  Eigen::Index packets() const { return packets_; }
  Eigen::Index stride() const { return packets_ * Kernel::kLanes; }
  const Scalar* data() const { return data_.data(); }
  /// The largest column norm of a as it is (a product of many rounded
  /// orthogonal blocks drifts from orthogonal), not 1.
  double column_norm() const { return column_norm_; }

 private:
  Eigen::Index b_, packets_;
  Eigen::Matrix<Scalar, Eigen::Dynamic, 1> data_;
  double column_norm_ = 0;
};

enum class TileReduction { kExtremes, kAbsMax, kStore };

// Calls f(std::integral_constant<int, i>()) for i = 0, …, N − 1, unrolled
// by the compiler whatever its optimisation level: with constant indices the
// register tile's accumulators stay in registers (at -O2 GCC unrolls no
// loop, and kept them in memory: 4× slower).
template <int N, class F>
inline void unrolled(F&& f) {
  [&]<int... i>(std::integer_sequence<int, i...>) {
    (f(std::integral_constant<int, i>()), ...);
  }(std::make_integer_sequence<int, N>());
}

// Lane-wise max and min: Eigen's pmax and pmin, except with AVX-512, where
// the masked instructions with every lane selected compute the same (the
// operands in Eigen's order): GCC 12's _mm512_max_ps passes
// _mm512_undefined_ps() through, which -Wuninitialized reports once it is
// inlined into block_tile (an error under -Werror).
template <class Packet>
inline Packet lane_max(const Packet& a, const Packet& b) {
  return Eigen::internal::pmax(a, b);
}
template <class Packet>
inline Packet lane_min(const Packet& a, const Packet& b) {
  return Eigen::internal::pmin(a, b);
}
#ifdef EIGEN_VECTORIZE_AVX512
inline __m512 lane_max(const __m512& a, const __m512& b) { return _mm512_mask_max_ps(a, __mmask16(0xFFFF), b, a); }
inline __m512 lane_min(const __m512& a, const __m512& b) { return _mm512_mask_min_ps(a, __mmask16(0xFFFF), b, a); }
inline __m512d lane_max(const __m512d& a, const __m512d& b) { return _mm512_mask_max_pd(a, __mmask8(0xFF), b, a); }
inline __m512d lane_min(const __m512d& a, const __m512d& b) { return _mm512_mask_min_pd(a, __mmask8(0xFF), b, a); }
#endif

// One register tile: kRows rows of x (row stride b) times Packets packets of
// A's columns (from `a`, row stride `lda`), over k = 0..b−1. kExtremes folds
// the tile into out0 (per-column maxima) and out1 (minima), kAbsMax into
// out0 (per-column maxima of |y|), kStore writes it to out0 (row stride ldo).
template <class Scalar, int Packets, TileReduction Mode>
inline void block_tile(const Scalar* x, Eigen::Index b, const Scalar* a, Eigen::Index lda, Scalar* out0, Scalar* out1,
                       Eigen::Index ldo) {
  using Kernel = BlockKernel<Scalar>;
  using Packet = typename Kernel::Packet;
  constexpr int kRows = Kernel::kRows, kLanes = Kernel::kLanes;
  namespace ei = Eigen::internal;
  Packet acc[kRows][Packets];
  unrolled<kRows>([&](auto r) { unrolled<Packets>([&](auto p) { acc[r][p] = ei::pset1<Packet>(Scalar(0)); }); });
  for (Eigen::Index k = 0; k < b; ++k) {
    Packet ak[Packets];
    unrolled<Packets>([&](auto p) { ak[p] = ei::ploadu<Packet>(a + k * lda + p * kLanes); });
    unrolled<kRows>([&](auto r) {
      const Packet xk = ei::pset1<Packet>(x[r * b + k]);
      unrolled<Packets>([&](auto p) { acc[r][p] = ei::pmadd(ak[p], xk, acc[r][p]); });
    });
  }
  unrolled<Packets>([&](auto p) {
    if constexpr (Mode == TileReduction::kStore) {
      unrolled<kRows>([&](auto r) { ei::pstoreu(out0 + r * ldo + p * kLanes, acc[r][p]); });
    } else if constexpr (Mode == TileReduction::kAbsMax) {
      Packet m = ei::ploadu<Packet>(out0 + p * kLanes);
      unrolled<kRows>([&](auto r) { m = lane_max(m, ei::pabs(acc[r][p])); });
      ei::pstoreu(out0 + p * kLanes, m);
    } else {
      Packet hi = ei::ploadu<Packet>(out0 + p * kLanes), lo = ei::ploadu<Packet>(out1 + p * kLanes);
      unrolled<kRows>([&](auto r) {
        hi = lane_max(hi, acc[r][p]);
        lo = lane_min(lo, acc[r][p]);
      });
      ei::pstoreu(out0 + p * kLanes, hi);
      ei::pstoreu(out1 + p * kLanes, lo);
    }
  });
}

// kChunkRows rows of x (row stride b) times the packed A: every column panel
// of up to kPackets packets, every register tile of kRows rows. For kStore,
// out0 has kChunkRows rows of a.stride() entries.
template <class Scalar, TileReduction Mode>
void block_chunk(const Scalar* x, const PackedRotation<Scalar>& a, Scalar* out0, Scalar* out1) {
  using Kernel = BlockKernel<Scalar>;
  const Eigen::Index b = a.b(), lda = a.stride();
  for (Eigen::Index p0 = 0; p0 < a.packets(); p0 += Kernel::kPackets) {
    const Eigen::Index panel = std::min<Eigen::Index>(Kernel::kPackets, a.packets() - p0);
    const Eigen::Index column = p0 * Kernel::kLanes;
    const Scalar* ap = a.data() + column;
    for (Eigen::Index r = 0; r < kChunkRows; r += Kernel::kRows) {
      const Scalar* xr = x + r * b;
      Scalar* o0 = Mode == TileReduction::kStore ? out0 + r * lda + column : out0 + column;
      Scalar* o1 = Mode == TileReduction::kExtremes ? out1 + column : nullptr;
      if (panel == 3) {
        block_tile<Scalar, 3, Mode>(xr, b, ap, lda, o0, o1, lda);
      } else if (panel == 2) {
        block_tile<Scalar, 2, Mode>(xr, b, ap, lda, o0, o1, lda);
      } else {
        block_tile<Scalar, 1, Mode>(xr, b, ap, lda, o0, o1, lda);
      }
    }
  }
}

// value ← max(value, candidate), atomically.
inline void atomic_raise(std::atomic<double>& value, double candidate) {
  double seen = value.load(std::memory_order_relaxed);
  while (candidate > seen && !value.compare_exchange_weak(seen, candidate, std::memory_order_relaxed)) {
  }
}

// The extremes of Y_t for kRange and kAbsMax, and the first entry (in
// row-major order of the blocked view) holding the peak: the one of max and
// min of larger magnitude, +v on a tie with −v.
struct Extremes {
  double hi = 0, lo = 0;
  Eigen::Index hi_at = 0, lo_at = 0;  // positions in the blocked view: row·b + column
  Eigen::Index rows = 0;              // rows multiplied

  bool peak_is_hi() const { return !(-lo > hi); }
  double score(GreedyScore s) const { return s == GreedyScore::kRange ? hi - lo : std::fabs(peak_is_hi() ? hi : lo); }
  Eigen::Index channel(Eigen::Index b) const { return (peak_is_hi() ? hi_at : lo_at) % b; }
};

// Lazy evaluation of the rotated blocks (why the greedy is fast where the
// input has outliers). Step t needs only the extremes of Y_t = X_b·A_t, A_t
// the product of the steps so far, and an orthogonal A_t keeps every row's
// 2-norm: no entry of row i can exceed ‖x_i‖ in magnitude. So the rows are
// visited in order of decreasing norm, each computed afresh as x_i·A_t (A_t
// accumulated in double, rounded once per step), and the visit stops at the
// first row whose norm bound cannot reach the extremes found so far. With
// outliers, the extremes sit in the few rows that hold them and most rows
// are never multiplied; without (Gaussian or smoothed activations), every
// row is, at the cost of the plain sequential update Y_t = Y_(t−1)·B_t, by
// BlockKernel at a GEMM's rate. Nothing is written back: Y_t is never stored.
//
// Threads: the rows are cut into chunks of kChunkRows in norm order, dealt
// to the tasks in turn; each task publishes the threshold its own extremes
// give (any task's is a valid lower bound for the whole tensor's), and stops
// at its first chunk whose largest bound is below the best threshold
// published. A skipped row cannot reach the extremes, and a row
// computed needlessly only adds entries below them, so the extremes, their
// first positions and the scores are the same for any thread count and
// any interleaving, bit for bit: each entry is one fixed chain (BlockKernel).
template <class Scalar>
class NormOrderedRows {
 public:
  /// The blocks of m (rows × C, b | C): row i·(C/b) + k of the blocked view
  /// is m(i, k·b .. k·b + b − 1).
  template <class Derived>
  NormOrderedRows(const Eigen::MatrixBase<Derived>& m, Eigen::Index b)
      : b_(b), count_(m.rows() * (m.cols() / b)), original_(static_cast<std::size_t>(count_)) {
    const Eigen::Index per_row = m.cols() / b, n = count_;
    Eigen::VectorXd norms(n);
    for (Eigen::Index r = 0; r < n; ++r)
      norms(r) = m.row(r / per_row).segment((r % per_row) * b, b).template cast<double>().norm();
    std::iota(original_.begin(), original_.end(), Eigen::Index(0));
    std::stable_sort(original_.begin(), original_.end(), [&](Eigen::Index i, Eigen::Index j) { return norms(i) > norms(j); });
    // Whole chunks: the last one is padded with copies of the last row,
    // whose products equal that row's and so change no extreme (the scan for
    // positions skips them).
    const Eigen::Index chunks = (n + kChunkRows - 1) / kChunkRows;
    rows_.resize(chunks * kChunkRows, b);
    bounds_.resize(static_cast<std::size_t>(chunks));
    // |fl(x_i·a_j)| ≤ (1 + γ_b)·‖x_i‖·‖a_j‖ (γ_b = b·u/(1 − b·u), the dot
    // product's rounding in any order); the visit multiplies by max_j ‖a_j‖,
    // measured. 4·b·u covers 1 + γ_b with room, and the norms' own rounding.
    const double slack = 1.0 + 4.0 * static_cast<double>(b) * static_cast<double>(std::numeric_limits<Scalar>::epsilon());
    for (Eigen::Index r = 0; r < rows_.rows(); ++r) {
      const Eigen::Index i = original_[static_cast<std::size_t>(std::min(r, n - 1))];
      rows_.row(r) = m.row(i / per_row).segment((i % per_row) * b, b);
      if (r % kChunkRows == 0) bounds_[static_cast<std::size_t>(r / kChunkRows)] = norms(i) * slack;
    }
  }

  /// Blocked rows (the view's, without the padding).
  Eigen::Index rows() const { return count_; }

  /// The extremes of (rows·a) and their first positions, from the rows that
  /// can reach them, on `pool` (null: this thread only).
  Extremes extremes(const PackedRotation<Scalar>& a, GreedyScore score, cpu::ThreadPool* pool) {
    const Eigen::Index chunks = this->chunks(), stride = a.stride();
    const int tasks = task_count(pool);
    const Scalar inf = std::numeric_limits<Scalar>::infinity();
    chunk_hi_.resize(chunks);
    chunk_lo_.resize(chunks);
    computed_.assign(static_cast<std::size_t>(chunks), 0);
    // Per task: the columns' maxima and minima of the chunk in hand, then
    // the task's extremes over its chunks so far (its threshold).
    scratch_.resize(2 * stride * tasks);
    task_hi_.setConstant(tasks, -inf);
    task_lo_.setConstant(tasks, inf);
    const Eigen::Index computed = for_chunks(a, pool, tasks, [&](std::int64_t task, Eigen::Index c) {
      Scalar* hi = scratch_.data() + 2 * stride * task;
      Scalar* lo = hi + stride;
      std::fill(hi, hi + stride, -inf);
      std::fill(lo, lo + stride, inf);
      block_chunk<Scalar, TileReduction::kExtremes>(rows_.data() + c * kChunkRows * b_, a, hi, lo);
      chunk_hi_(c) = *std::max_element(hi, hi + stride);
      chunk_lo_(c) = *std::min_element(lo, lo + stride);
      computed_[static_cast<std::size_t>(c)] = 1;
      const double h = static_cast<double>(task_hi_(task) = std::max(task_hi_(task), chunk_hi_(c)));
      const double l = static_cast<double>(task_lo_(task) = std::min(task_lo_(task), chunk_lo_(c)));
      // kRange needs both extremes exactly; kAbsMax only the larger magnitude.
      return score == GreedyScore::kRange ? std::min(h, -l) : std::max(h, -l);
    });
    // The extremes in chunk order (not the tasks'), so that even the sign of
    // a zero extreme does not depend on which task took which chunk.
    Scalar hi = -inf, lo = inf;
    for (Eigen::Index c = 0; c < chunks; ++c) {
      if (computed_[static_cast<std::size_t>(c)] == 0) continue;
      hi = std::max(hi, chunk_hi_(c));
      lo = std::min(lo, chunk_lo_(c));
    }
    Extremes e;
    e.rows = std::min(computed * kChunkRows, count_);
    e.hi = static_cast<double>(hi);
    e.lo = static_cast<double>(lo);
    e.hi_at = first_position(a, hi, chunk_hi_);
    e.lo_at = first_position(a, lo, chunk_lo_);
    return e;
  }

  /// Per column j of the blocked view, max |(rows·a)_ij| over the rows that
  /// can change it (the weight-aware score), in double; `rows` receives the
  /// rows multiplied.
  Eigen::ArrayXd column_abs_max(const PackedRotation<Scalar>& a, cpu::ThreadPool* pool, Eigen::Index* rows = nullptr) {
    const Eigen::Index stride = a.stride();
    const int tasks = task_count(pool);
    // Per task, the columns' maxima over its chunks; a row whose bound is
    // below every column's maximum can change none.
    scratch_.setConstant(stride * tasks, Scalar(-1));
    const Eigen::Index computed = for_chunks(a, pool, tasks, [&](std::int64_t task, Eigen::Index c) {
      Scalar* m = scratch_.data() + stride * task;
      block_chunk<Scalar, TileReduction::kAbsMax>(rows_.data() + c * kChunkRows * b_, a, m, nullptr);
      return static_cast<double>(*std::min_element(m, m + stride));
    });
    if (rows != nullptr) *rows = std::min(computed * kChunkRows, count_);
    Eigen::ArrayXd out = Eigen::ArrayXd::Constant(b_, -1.0);
    for (Eigen::Index task = 0; task < tasks; ++task)
      out = out.max(scratch_.segment(task * stride, b_).template cast<double>().array());
    return out;
  }

 private:
  Eigen::Index chunks() const { return static_cast<Eigen::Index>(bounds_.size()); }
  // Tasks for a pass: at least kChunksPerTask of the chunks the previous
  // pass computed per task, as many as the pool has at most. Waking a
  // worker costs about as much as a chunk (tens of µs), so a pass that the
  // lazy evaluation cuts to a chunk or two runs on this thread alone; the
  // result does not depend on the choice.
  static constexpr Eigen::Index kChunksPerTask = 4;
  int task_count(const cpu::ThreadPool* pool) const {
    if (pool == nullptr) return 1;
    return static_cast<int>(std::clamp<Eigen::Index>(last_computed_ / kChunksPerTask, 1, pool->size()));
  }

  // Runs threshold = body(task, chunk) over the chunks in norm order, on
  // `tasks` tasks of `pool`, while a chunk's largest bound can reach the best
  // threshold that any task has returned. Returns the chunks computed.
  template <class Body>
  Eigen::Index for_chunks(const PackedRotation<Scalar>& a, cpu::ThreadPool* pool, int tasks, Body&& body) {
    const Eigen::Index chunks = this->chunks();
    const double column_norm = a.column_norm();
    std::atomic<double> threshold{-std::numeric_limits<double>::infinity()};
    std::atomic<Eigen::Index> computed{0};
    // Task t takes chunks t, t + tasks, t + 2·tasks, …: interleaved, so that
    // every task has rows of every norm, and fixed, so that every task's
    // share is computed and merged whichever thread runs it.
    auto task = [&](std::int64_t t) {
      Eigen::Index done = 0;
      for (Eigen::Index c = t; c < chunks; c += tasks) {
        // Bounds are descending: the chunks that can still matter are a prefix.
        if (bounds_[static_cast<std::size_t>(c)] * column_norm < threshold.load(std::memory_order_relaxed)) break;
        atomic_raise(threshold, body(t, c));
        ++done;
      }
      computed.fetch_add(done, std::memory_order_relaxed);
    };
    if (tasks == 1) {
      task(0);
    } else {
      pool->run(tasks, task);
    }
    last_computed_ = computed.load();
    return last_computed_;
  }

  // The first position (row-major in the blocked view: original row·b +
  // column) holding `value`, among the computed chunks whose extreme equals
  // it: those chunks are multiplied again, stored and scanned. A peak usually
  // sits in one chunk; ties across many (constant or all-zero rows) cost
  // one more pass over them.
  Eigen::Index first_position(const PackedRotation<Scalar>& a, Scalar value,
                              const Eigen::Matrix<Scalar, Eigen::Dynamic, 1>& chunk_extreme) {
    const Eigen::Index stride = a.stride();
    tile_.resize(kChunkRows * stride);
    Eigen::Index at = std::numeric_limits<Eigen::Index>::max();
    for (Eigen::Index c = 0; c < chunks(); ++c) {
      if (computed_[static_cast<std::size_t>(c)] == 0 || chunk_extreme(c) != value) continue;
      block_chunk<Scalar, TileReduction::kStore>(rows_.data() + c * kChunkRows * b_, a, tile_.data(), nullptr);
      const Eigen::Index valid = std::min(kChunkRows, count_ - c * kChunkRows);
      for (Eigen::Index r = 0; r < valid; ++r) {
        const Eigen::Index first = original_[static_cast<std::size_t>(c * kChunkRows + r)] * b_;
        if (first >= at) continue;  // nothing in this row can come first
        for (Eigen::Index j = 0; j < b_; ++j)
          if (tile_(r * stride + j) == value) {
            at = first + j;
            break;
          }
      }
    }
    return at;
  }

  Eigen::Index b_, count_;
  RowMajorMatrix<Scalar> rows_;         // the blocked rows, largest norm first, padded to whole chunks
  std::vector<double> bounds_;          // each chunk's largest norm with rounding slack, descending
  std::vector<Eigen::Index> original_;  // the rows' rows in the blocked view
  using Vector = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;
  Vector chunk_hi_, chunk_lo_, task_hi_, task_lo_, scratch_, tile_;
  std::vector<unsigned char> computed_;
  Eigen::Index last_computed_ = std::numeric_limits<Eigen::Index>::max();  // chunks the last pass computed
};

// E_d·B·E_d into `out` (preallocated b × b): B with indices 0 and d exchanged.
template <class Scalar>
void exchanged(const DenseMatrix<Scalar>& base, Eigen::Index d, DenseMatrix<Scalar>& out) {
  out = base;
  if (d == 0) return;
  out.row(0).swap(out.row(d));
  out.col(0).swap(out.col(d));
}

// out ← lhs·rhs (n × n, double) exactly as `out.noalias() = lhs * rhs` computes
// it on one thread — Eigen's coefficient-based product below its size
// threshold, else its blocked GEMM, sequential — but never through OpenMP:
// Eigen parallelises this product when built with OpenMP, and the team it
// starts keeps spinning after the product, on the cores that the greedy's
// own threads need (perf: 12 % of the calibration's time in libgomp's spin,
// 2 threads). Sequential, A_t is also the one the greedy had on one thread,
// bit for bit, whether or not OpenMP is on (a parallel GEMM blocks the
// product differently, which may round differently).
inline void sequential_product(const DenseMatrix<double>& lhs, const DenseMatrix<double>& rhs,
                               DenseMatrix<double>& out) {
  const Eigen::Index n = lhs.rows();
  if (3 * n < EIGEN_GEMM_TO_COEFFBASED_THRESHOLD) {
    out.noalias() = lhs * rhs;  // coefficient-based: never parallel
    return;
  }
  using Gemm = Eigen::internal::general_matrix_matrix_product<Eigen::Index, double, Eigen::ColMajor, false, double,
                                                              Eigen::ColMajor, false, Eigen::ColMajor, 1>;
  Eigen::internal::gemm_blocking_space<Eigen::ColMajor, double, double, Eigen::Dynamic, Eigen::Dynamic, Eigen::Dynamic>
      blocking(n, n, n, 1, true);
  out.setZero();
  Gemm::run(n, n, n, lhs.data(), lhs.outerStride(), rhs.data(), rhs.outerStride(), out.data(), 1, out.outerStride(),
            1.0, blocking, nullptr);
}

// One step's look: the score and the pivot channel of Y_t = X_b·A_t.
struct Look {
  double score;
  Eigen::Index channel;
};

// Algorithm 1 on the blocked activations (and the blocked weights when the
// score uses them: `weights` engaged), the products on `pool` (null: this
// thread). Inputs already checked.
template <class Scalar>
GreedyRotation<Scalar> greedy_on_blocks(NormOrderedRows<Scalar>& activations,
                                        std::optional<NormOrderedRows<Scalar>>& weights,
                                        const DenseMatrix<Scalar>& base, const GreedyRotationOptions& options,
                                        cpu::ThreadPool* pool) {
  const Eigen::Index b = base.rows();

  // A_t in double; a_t = A_t rounded once to Scalar for the products.
  const DenseMatrix<double> base_d = base.template cast<double>();
  DenseMatrix<double> accumulated = DenseMatrix<double>::Identity(b, b), product(b, b), step(b, b);
  PackedRotation<Scalar> a(b);
  a.assign(DenseMatrix<Scalar>::Identity(b, b));
  auto look = [&]() {
    if (!weights) {
      const Extremes e = activations.extremes(a, options.score, pool);
      return Look{e.score(options.score), e.channel(b)};
    }
    // a_j·w_j per block position; the first j of the largest product.
    const Eigen::ArrayXd product_max = activations.column_abs_max(a, pool) * weights->column_abs_max(a, pool);
    Eigen::Index channel = 0;
    const double best = product_max.maxCoeff(&channel);  // Eigen returns the first maximum
    return Look{best, channel};
  };

  GreedyRotation<Scalar> result;
  result.pivots.reserve(static_cast<std::size_t>(options.steps));
  result.scores.reserve(static_cast<std::size_t>(options.steps) + 1);
  // The kept rotation is A_k at the first lowest score, taken as the loop
  // passes it. A_t is accumulated in double and rounded once, so that a float
  // rotation stays orthogonal to float precision after hundreds of steps.
  DenseMatrix<double> kept = accumulated;
  auto record = [&](double score) {
    if (result.scores.empty() || score < result.scores[static_cast<std::size_t>(result.kept)]) {
      result.kept = static_cast<Eigen::Index>(result.scores.size());
      kept = accumulated;
    }
    result.scores.push_back(score);
  };
  for (int t = 0; t < options.steps; ++t) {
    const Look e = look();
    record(e.score);
    result.pivots.push_back(e.channel);
    exchanged(base_d, e.channel, step);
    sequential_product(accumulated, step, product);
    accumulated.swap(product);
    a.assign(accumulated.cast<Scalar>());
    if (options.progress) options.progress(t + 1, options.steps);
  }
  record(look().score);
  // The kept rotation is a product of up to kMaxGreedySteps copies of B, and
  // a float B is orthogonal only to its rounding (~ε), an error the product
  // accumulates: unprojected, max |AᵀA − I| reached 254ε at b = 4 with 207
  // steps kept and 1175ε at b = 2 with 4093 (measured, float). Projected, it
  // is still the product of the steps to the precision it had.
  detail_rotation::project_orthogonal(kept);
  result.rotation = kept.cast<Scalar>();
  return result;
}

// Returns the thread count (options.threads resolved; cpu::resolve_threads).
template <class Derived>
int check_greedy_input(const Eigen::MatrixBase<Derived>& x, const DenseMatrix<typename Derived::Scalar>& base,
                       const GreedyRotationOptions& options, std::string_view where) {
  const Eigen::Index b = base.rows();
  detail::require(b >= 2 && base.cols() == b, where, "base must be square with size >= 2, got ", base.rows(), " x ",
                  base.cols());
  detail::require(x.rows() > 0 && x.cols() > 0, where, "x must be non-empty, got ", x.rows(), " x ", x.cols());
  detail::require(x.cols() % b == 0, where, "the block size (", b, ") must divide the channel count of x (",
                  x.cols(), ")");
  detail::require(options.steps >= 0 && options.steps <= kMaxGreedySteps, where, "options.steps must be in [0, ",
                  kMaxGreedySteps, "], got ", options.steps);
  const int threads = cpu::resolve_threads(options.threads, where, options.pool);
  detail::require_finite(x, where, "x");
  require_orthogonal(base, b, where, "base");
  return threads;
}

}  // namespace detail_rotation

/// y ← y·diag(r, …, r) in place: every r.rows()-wide block of each row of y
/// right-multiplied by r (b × b, b >= 1, b divides y.cols(); std::invalid_argument
/// otherwise), tile by tile through a small buffer instead of a y-sized
/// temporary. What DuQuantTransform applies per rotation stage, and the
/// greedy calibration between stages.
template <class Scalar, class RotationDerived>
void rotate_blocks_in_place(RowMajorMatrix<Scalar>& y, const Eigen::MatrixBase<RotationDerived>& r) {
  constexpr std::string_view kWhere = "oq::transform::rotate_blocks_in_place";
  const Eigen::Index b = r.rows();
  detail::require(b >= 1 && r.cols() == b, kWhere, "r must be square and non-empty, got ", r.rows(), " x ", r.cols());
  detail::require(y.cols() % b == 0, kWhere, "the block size (", b, ") must divide the column count of y (", y.cols(),
                  ")");
  if (y.size() == 0) return;
  Eigen::Map<RowMajorMatrix<Scalar>> blocks(y.data(), y.size() / b, b);
  RowMajorMatrix<Scalar> tile(std::min(detail_rotation::kTileRows, blocks.rows()), b);
  for (Eigen::Index start = 0; start < blocks.rows(); start += detail_rotation::kTileRows) {
    const Eigen::Index count = std::min(detail_rotation::kTileRows, blocks.rows() - start);
    tile.topRows(count).noalias() = blocks.middleRows(start, count) * r;
    blocks.middleRows(start, count) = tile.topRows(count);
  }
}

/// The thread pool a greedy calibration runs on: `given` (the caller's,
/// GreedyRotationOptions::pool) where it has more than one thread, else
/// `own` started with `threads` threads — none (null: the caller's thread
/// does all the work, with the same result) for one thread, or where the
/// system refuses a thread. `own` must outlive the calibration.
inline cpu::ThreadPool* greedy_thread_pool(int threads, cpu::ThreadPool* given, std::optional<cpu::ThreadPool>& own) {
  if (given != nullptr) return given->size() > 1 ? given : nullptr;
  if (threads <= 1) return nullptr;
  try {
    return &own.emplace(threads);
  } catch (const std::system_error&) {
    return nullptr;
  }
}

/// Algorithm 1 on x (tokens × C) with the base block `base` (b × b, b | C),
/// scored on the activations alone (kRange or kAbsMax).
template <class Derived>
GreedyRotation<typename Derived::Scalar> greedy_block_rotation(const Eigen::MatrixBase<Derived>& x,
                                                               const DenseMatrix<typename Derived::Scalar>& base,
                                                               const GreedyRotationOptions& options = {}) {
  constexpr std::string_view kWhere = "oq::transform::greedy_block_rotation";
  const int threads = detail_rotation::check_greedy_input(x, base, options, kWhere);
  detail::require(!needs_weights(options.score), kWhere,
                  "options.score = kActivationTimesWeight needs the weights: call the overload that takes them");
  using Scalar = typename Derived::Scalar;
  detail_rotation::NormOrderedRows<Scalar> activations(x, base.rows());
  std::optional<detail_rotation::NormOrderedRows<Scalar>> no_weights;
  std::optional<cpu::ThreadPool> own;
  return detail_rotation::greedy_on_blocks(activations, no_weights, base, options,
                                           greedy_thread_pool(threads, options.pool, own));
}

/// Algorithm 1 with the weights w (out × C) of the linear that reads x, for
/// the weight-aware score kActivationTimesWeight (other scores ignore w,
/// which must still have C columns).
template <class Derived, class WeightDerived>
GreedyRotation<typename Derived::Scalar> greedy_block_rotation(const Eigen::MatrixBase<Derived>& x,
                                                               const Eigen::MatrixBase<WeightDerived>& w,
                                                               const DenseMatrix<typename Derived::Scalar>& base,
                                                               const GreedyRotationOptions& options = {}) {
  using Scalar = typename Derived::Scalar;
  static_assert(std::is_same_v<Scalar, typename WeightDerived::Scalar>, "x and w must have the same scalar type");
  constexpr std::string_view kWhere = "oq::transform::greedy_block_rotation";
  const int threads = detail_rotation::check_greedy_input(x, base, options, kWhere);
  detail::require(w.rows() > 0 && w.cols() == x.cols(), kWhere, "w must have x's ", x.cols(),
                  " columns (one per input channel) and at least one row, got ", w.rows(), " x ", w.cols());
  detail::require_finite(w, kWhere, "w");
  if (!needs_weights(options.score)) return greedy_block_rotation(x, base, options);
  detail_rotation::NormOrderedRows<Scalar> activations(x, base.rows());
  std::optional<detail_rotation::NormOrderedRows<Scalar>> weights(std::in_place, w, base.rows());
  std::optional<cpu::ThreadPool> own;
  return detail_rotation::greedy_on_blocks(activations, weights, base, options,
                                           greedy_thread_pool(threads, options.pool, own));
}

}  // namespace oq::transform
