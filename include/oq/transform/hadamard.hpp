// oq/transform/hadamard.hpp: Hadamard rotations (docs/design.md §5).
//
//   using namespace oq::transform;
//   hadamard_rows(x);                        // in place, every row: x ← x·M, M = H_n/√n, n = x.cols()
//   hadamard_rows(w);                        // the same M on the weights: (x·M)·(w·M)ᵀ = x·wᵀ
//   hadamard_rows(x, Direction::kInverse);   // x ← x·Mᵀ = x·M⁻¹ undoes it
//   block_hadamard_rows(x, 64);              // M = diag(H_64, …, H_64)/8, blocks of 64 channels
//   fwht_rows(x);                            // plain fast Walsh–Hadamard, n = 2^m only
//   auto m = hadamard_orthogonal<float>(n);  // the explicit M, to fold into weights offline
//   auto h = hadamard_matrix(n);             // the ±1 H_n (int), H·Hᵀ = n·I; or
//   hadamard_matrix_into(n, buffer);         //   into your own n × n buffer, any signed scalar
//   auto c = find_hadamard_construction(n);  // std::nullopt when oq has no construction for n
//   auto d = hadamard_construction(n, "my_fn", "width");  // or std::invalid_argument naming your parameter
//
// Convention: a transform acts on rows from the right, x ↦ x·M, so that with
// y = X·Wᵀ (X tokens × channels, W out × in, docs/design.md §4) rotating both operands'
// rows by the same orthogonal M leaves y unchanged (docs/design.md §5). Sylvester's
// H_(2^m) is symmetric, so for it x·H = (H·xᵀ)ᵀ and the inverse is the forward
// transform again; Paley I matrices are not symmetric (H + Hᵀ = 2I), which is
// why the general transforms take a Direction.
//
// Sizes. n = K·2^m with H_n = H_K ⊗ H_(2^m). The Kronecker index order is
// Eigen's kroneckerProduct / numpy.kron order: with P = 2^m, index i = a·P + b
// has the H_K index a ∈ [0, K) as the outer (slow) index and the Sylvester
// index b ∈ [0, P) as the inner (fast, contiguous) one:
//     H_n(a·P + b, c·P + d) = H_K(a, c) · H_P(b, d),   H_P(b, d) = (−1)^popcount(b & d).
// H_K is one of (every matrix generated in code, never a pasted table):
//   K = 1          nothing (n is a power of two: Sylvester 1867 alone);
//   K = q + 1      q a prime power, q ≡ 3 (mod 4): Paley I (Paley 1933), H = I + [[0, jᵀ], [−j, Q]];
//   K = 2(q + 1)   q a prime power, q ≡ 1 (mod 4): Paley II (Paley 1933),
//                  H = S ⊗ [[1, 1], [1, −1]] + I ⊗ [[1, −1], [−1, −1]], S = [[0, jᵀ], [j, Q]];
// with Q(a, b) = χ(a − b) the Jacobsthal matrix over the field GF(q) and j the
// all-ones column. For a prime q the field is Z/q and χ the Legendre symbol;
// for q = p^k, k > 1 (27, 49, 125, 243, 343, …) the elements are the
// polynomials of degree < k over GF(p), numbered c_0 + c_1·p + … , a − b is
// taken digit by digit mod p, and χ(a) is the parity of a's discrete
// logarithm to a primitive element, found with an irreducible modulus in
// code (detail/galois_field.hpp says how). Paley's proof uses only that GF(q)
// is a field with χ its quadratic character, so both constructions hold for
// every prime power (Paley 1933; Horadam, "Hadamard Matrices and Their
// Applications", §1.4). Sylvester doubling of a Paley matrix (40 = 2·20)
// is the m ≥ 1 case. Of the ways to write n, the one with the largest m (the
// smallest K) is used; for one K, a prime q before a prime power, and Paley I
// before Paley II (12 is Paley I with q = 11, not Paley II with q = 5; 28 is
// Paley II with q = 13, not Paley I with q = 27). The prime powers add the
// orders 52 (q = 25, Paley II), 100 (q = 49), 244 (q = 3⁵, Paley I), 340
// (q = 13²), 344 (q = 7³), 580, 724 and their doublings, and give a larger
// 2^m to some sizes that had a construction (104 = 52·2, 200 = 100·2,
// 488 = 244·2, …, 5504 = 344·16), among them n = 11008 = 344·32, LLaMA-2-7B's
// MLP width (Paley I over GF(7³), doubled five times; before: 5504·2). Some Hadamard orders have no Paley construction at
// all (92, 116, 172, …: Williamson's and others, not implemented): for
// those use block_hadamard_rows with a constructible block size.
//
// Cost of hadamard_rows: O(n·(m + K)) per row — butterflies on the 2^m part
// and a dense K × K product on the other, never a dense n × n product. K is
// not bounded by oq; the smallest K of n is used (11008: K = 344, P = 32,
// about 350 operations per entry, against 11008 for the dense n × n product;
// without prime powers it was K = 5504, q = 5503 prime).
//
// NaN/Inf policy: rejected with std::domain_error naming the first bad entry
// (checked before anything is written), as everywhere in oq. Finite input
// never gives a non-finite output silently (issue 23): the transform sums
// up to n entries before it normalises by 1/√n, which overflows for entries
// near the type's largest value (FLT_MAX / n); then the rows are transformed
// scaled by a power of two (exact, but for entries driven subnormal) and
// scaled back, and an output that is itself beyond the largest finite value
// (|y| ≤ ‖x_row‖₂ ≤ √n·max|x|) is a std::domain_error naming it, with x
// unchanged. Ordinary data takes the unscaled path, bit for bit as before,
// at the cost of one more pass over x (its max |x|).
#pragma once

#include <oq/detail/check.hpp>
#include <oq/detail/galois_field.hpp>

#include <Eigen/Core>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <string_view>
#include <type_traits>
#include <vector>

namespace oq::transform {

/// Whether a transform applies M or its transpose Mᵀ = M⁻¹ to the rows.
enum class Direction { kForward, kInverse };

/// How the factor H_K of H_n = H_K ⊗ H_(2^m) is built (see the file comment).
enum class HadamardKind { kSylvester, kPaleyI, kPaleyII };

constexpr std::string_view to_string(HadamardKind kind) noexcept {
  switch (kind) {
    case HadamardKind::kSylvester: return "Sylvester";
    case HadamardKind::kPaleyI: return "Paley I";
    case HadamardKind::kPaleyII: return "Paley II";
  }
  return "unknown";
}

/// How oq builds a Hadamard matrix of order size = base · 2^power.
struct HadamardConstruction {
  Eigen::Index size = 1;                         ///< n
  Eigen::Index base = 1;                         ///< K: 1, q + 1 (Paley I) or 2(q + 1) (Paley II)
  int power = 0;                                 ///< m: the Sylvester factor is H_(2^m)
  HadamardKind kind = HadamardKind::kSylvester;  ///< how H_K is built (kSylvester iff K = 1)
  Eigen::Index prime = 0;  ///< p, the characteristic of Paley's field GF(q), q = p^degree; 0 for K = 1
  int degree = 0;          ///< k of q = p^k (1 where q is itself prime); 0 for K = 1

  /// P = 2^m, the order of the Sylvester factor (the inner Kronecker index).
  constexpr Eigen::Index sylvester_size() const noexcept { return Eigen::Index{1} << power; }

  /// q = p^k, the order of the field of the Paley construction; 0 for K = 1.
  constexpr Eigen::Index field_order() const noexcept {
    if (degree == 0) return 0;
    Eigen::Index q = 1;
    for (int i = 0; i < degree; ++i) q *= prime;
    return q;
  }
};

namespace detail_hadamard {

constexpr std::string_view kSizeRule =
    "a size with a Hadamard construction (K * 2^m with K = 1, K = q + 1 for a prime power q = 3 mod 4, "
    "or K = 2(q + 1) for a prime power q = 1 mod 4)";

// Paley's constructions for one K, or nullopt (power set by the caller):
// over a prime field only (prime_fields) or over a field of q = p^k with
// k > 1 only. Trial division (detail::prime_power): the q of any matrix that
// fits in memory is far below 2^40.
inline std::optional<HadamardConstruction> base_construction(Eigen::Index k, bool prime_fields) {
  if (k == 1) return prime_fields ? std::optional<HadamardConstruction>(HadamardConstruction{}) : std::nullopt;
  const auto field = [prime_fields](Eigen::Index q) -> std::optional<detail::PrimePower> {
    const std::optional<detail::PrimePower> f = detail::prime_power(q);
    if (!f || (f->degree == 1) != prime_fields) return std::nullopt;
    return f;
  };
  if ((k - 1) % 4 == 3) {
    if (const auto f = field(k - 1)) return HadamardConstruction{k, k, 0, HadamardKind::kPaleyI, f->prime, f->degree};
  }
  if (k % 2 == 0 && (k / 2 - 1) % 4 == 1) {
    if (const auto f = field(k / 2 - 1)) {
      return HadamardConstruction{k, k, 0, HadamardKind::kPaleyII, f->prime, f->degree};
    }
  }
  return std::nullopt;
}

// The ±1 matrix H_K of a construction (K × K).
inline Eigen::MatrixXi base_matrix(const HadamardConstruction& c) {
  const Eigen::Index k = c.base;
  Eigen::MatrixXi h(k, k);
  if (c.kind == HadamardKind::kSylvester) {
    h.setOnes();
    return h;
  }
  // GF(q), q = p^k, its elements numbered 0 … q − 1 (detail/galois_field.hpp:
  // for k = 1 the residues mod p, for k > 1 polynomials over GF(p) modulo an
  // irreducible f found in code); χ its quadratic character, the parity of
  // the discrete logarithm (for k = 1 the Legendre symbol).
  const detail::GaloisField field(c.prime, c.degree);
  const Eigen::Index q = field.order();
  std::vector<int> chi(static_cast<std::size_t>(q));
  for (Eigen::Index a = 0; a < q; ++a) chi[static_cast<std::size_t>(a)] = field.chi(a);
  // Jacobsthal matrix Q(a, b) = χ(a − b), a, b in [0, q), the difference in GF(q).
  const auto jacobsthal = [&](Eigen::Index a, Eigen::Index b) {
    const Eigen::Index d = c.degree == 1 ? ((a - b) % q + q) % q : field.sub(a, b);
    return chi[static_cast<std::size_t>(d)];
  };
  if (c.kind == HadamardKind::kPaleyI) {
    // H = I + [[0, jᵀ], [−j, Q]]: Q is skew for q ≡ 3 (mod 4), so H·Hᵀ =
    // I + S·Sᵀ = (q + 1)·I with S the bordered skew matrix (Paley 1933).
    for (Eigen::Index i = 0; i < k; ++i) {
      for (Eigen::Index j = 0; j < k; ++j) {
        int v;  // the bordered skew matrix S = [[0, jᵀ], [−j, Q]]
        if (i == 0) {
          v = j == 0 ? 0 : 1;
        } else if (j == 0) {
          v = -1;
        } else {
          v = jacobsthal(i - 1, j - 1);
        }
        h(i, j) = v + (i == j ? 1 : 0);
      }
    }
    return h;
  }
  // Paley II: S = [[0, jᵀ], [j, Q]] is a symmetric conference matrix (S² = q·I)
  // for q ≡ 1 (mod 4); H = S ⊗ A + I ⊗ B with A = [[1, 1], [1, −1]],
  // B = [[1, −1], [−1, −1]] gives H·Hᵀ = 2q·I + S ⊗ (AB + BA) + 2·I = 2(q + 1)·I
  // because AB + BA = 0. S's index is the outer one, the 2 × 2 block's the inner.
  const Eigen::Index s_size = q + 1;
  constexpr int kA[2][2] = {{1, 1}, {1, -1}};
  constexpr int kB[2][2] = {{1, -1}, {-1, -1}};
  for (Eigen::Index i = 0; i < s_size; ++i) {
    for (Eigen::Index j = 0; j < s_size; ++j) {
      int s;
      if (i == j) {
        s = 0;
      } else if (i == 0 || j == 0) {
        s = 1;
      } else {
        s = jacobsthal(i - 1, j - 1);
      }
      for (int u = 0; u < 2; ++u) {
        for (int v = 0; v < 2; ++v) h(2 * i + u, 2 * j + v) = i == j ? kB[u][v] : s * kA[u][v];
      }
    }
  }
  return h;
}

// What the fast transform of one size needs, built once per call.
template <class Scalar>
struct Plan {
  HadamardConstruction construction;
  Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic> base;  // H_K or H_Kᵀ (±1), empty for K = 1
  Scalar scale;                                                 // 1/√n

  Plan(const HadamardConstruction& c, Direction direction)
      : construction(c), scale(static_cast<Scalar>(1.0 / std::sqrt(static_cast<double>(c.size)))) {
    if (c.base > 1) {
      const Eigen::MatrixXi h = base_matrix(c);
      // Row y = x·(H_K ⊗ H_P) mixes the K segments with H_K; the inverse
      // x·(H_K ⊗ H_P)ᵀ = x·(H_Kᵀ ⊗ H_P) with H_Kᵀ (H_P is symmetric).
      if (direction == Direction::kForward) {
        base = h.cast<Scalar>();
      } else {
        base = h.transpose().cast<Scalar>();
      }
    }
  }
};

// Rows processed together: a chunk is copied to a contiguous column-major
// buffer of about this many scalars (fits in L2), transformed there, and
// written back, which makes every step below a contiguous vector operation
// whatever the storage order of x.
constexpr Eigen::Index kChunkScalars = Eigen::Index{1} << 15;

// x ← x·M for every row of x (x.cols() == plan.construction.size).
template <class Scalar, class Derived>
void apply_plan(Eigen::MatrixBase<Derived>& x, const Plan<Scalar>& plan) {
  using Buffer = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;
  using Segment = Eigen::Map<Eigen::Array<Scalar, Eigen::Dynamic, 1>>;
  const Eigen::Index n = plan.construction.size;
  const Eigen::Index k = plan.construction.base;
  const Eigen::Index p = plan.construction.sylvester_size();
  const Eigen::Index rows = x.rows();
  if (rows == 0) return;
  const Eigen::Index chunk = std::min(rows, std::max<Eigen::Index>(1, kChunkScalars / n));
  Buffer buffer(chunk, n);
  Buffer mixed(k > 1 ? chunk : 0, k > 1 ? n : 0);
  Eigen::Array<Scalar, Eigen::Dynamic, 1> temp(chunk * p / 2);
  for (Eigen::Index r0 = 0; r0 < rows; r0 += chunk) {
    const Eigen::Index height = std::min(chunk, rows - r0);
    buffer.resize(height, n);
    buffer = x.middleRows(r0, height);
    // Sylvester part: the unnormalised FWHT of every length-P segment of every
    // row, butterflies (u, v) ↦ (u + v, u − v) on columns h apart. In the
    // column-major buffer the h columns starting at s are one contiguous run
    // of height·h scalars, so a butterfly stage on a block is three array ops.
    for (Eigen::Index h = 1; h < p; h *= 2) {
      const Eigen::Index run = height * h;
      for (Eigen::Index s = 0; s < n; s += 2 * h) {
        Segment u(buffer.data() + s * height, run);
        Segment v(buffer.data() + (s + h) * height, run);
        temp.head(run) = v;
        v = u - temp.head(run);
        u += temp.head(run);
      }
    }
    if (k == 1) {
      x.middleRows(r0, height) = buffer * plan.scale;
      continue;
    }
    // K part: y(c·P + d) = Σ_a H_K(a, c)·x(a·P + d). Column a·P + d of the
    // buffer starts at (a·P + d)·height, so the buffer read as a
    // (height·P) × K column-major matrix Z has Z(r + d·height, a) = x(r, a·P + d):
    // the whole mix is one product Z·H_K.
    mixed.resize(height, n);
    Eigen::Map<const Buffer> z(buffer.data(), height * p, k);
    Eigen::Map<Buffer> mixed_z(mixed.data(), height * p, k);
    mixed_z.noalias() = z * plan.base;
    x.middleRows(r0, height) = mixed * plan.scale;
  }
}

// x ← x·M for every row, as apply_plan, without overflow of its unnormalised
// sums (see the file comment): when n·max|x| could exceed half the largest
// value, the rows are transformed from a copy scaled by 2^−s, n ≤ 2^s, and
// scaled back; an output beyond the largest finite value throws
// std::domain_error naming it (`where`; x's columns start at first_column),
// x unchanged. x must be finite.
template <class Scalar, class Derived>
void apply_plan_without_overflow(Eigen::MatrixBase<Derived>& x, const Plan<Scalar>& plan, std::string_view where,
                                 Eigen::Index first_column = 0) {
  if (x.size() == 0) return;
  constexpr double kLargest = static_cast<double>(std::numeric_limits<Scalar>::max());
  const double n = static_cast<double>(plan.construction.size);
  const double max_abs = static_cast<double>(x.cwiseAbs().maxCoeff());
  if (max_abs * n <= 0.5 * kLargest) {
    apply_plan(x, plan);
    return;
  }
  const int s = static_cast<int>(std::ceil(std::log2(n))) + 1;
  using Copy = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;
  Copy scaled = x * static_cast<Scalar>(std::ldexp(1.0, -s));
  apply_plan(scaled, plan);
  scaled *= static_cast<Scalar>(std::ldexp(1.0, s));
  for (Eigen::Index r = 0; r < scaled.rows(); ++r) {
    for (Eigen::Index c = 0; c < scaled.cols(); ++c) {
      if (!std::isfinite(scaled(r, c))) {
        detail::require_domain(false, where, "the rotated x(", r, ", ", first_column + c, ") exceeds the largest finite ",
                               sizeof(Scalar) == 4 ? "float" : "double", " (x's row ", r,
                               " is too large for an orthogonal transform to keep finite; x is unchanged)");
      }
    }
  }
  x = scaled;
}

inline bool is_power_of_two(Eigen::Index n) { return n > 0 && (n & (n - 1)) == 0; }

inline int log2_exact(Eigen::Index n) {
  return std::countr_zero(static_cast<std::uint64_t>(n));
}

}  // namespace detail_hadamard

/// How oq builds a Hadamard matrix of order n (see the file comment), or
/// std::nullopt when it has no construction for n (92, 172, any n that is not
/// 1, 2 or a multiple of 4, …). Throws std::invalid_argument for n ≤ 0.
inline std::optional<HadamardConstruction> find_hadamard_construction(Eigen::Index n) {
  detail::require(n > 0, "oq::transform::find_hadamard_construction", "n must be positive, got ", n);
  // Largest power of two first: the smaller K, the cheaper the dense part.
  // For one K a prime q before a prime power (28 stays Paley II over GF(13)
  // rather than Paley I over GF(27): every size constructible before prime
  // powers were added keeps its matrix unless a prime power gives it a
  // larger 2^m, as for 104 = 52·2 and 11008 = 344·32).
  for (int m = detail_hadamard::log2_exact(n); m >= 0; --m) {
    const Eigen::Index k = n >> m;
    for (const bool prime_fields : {true, false}) {
      if (auto c = detail_hadamard::base_construction(k, prime_fields)) {
        c->size = n;
        c->power = m;
        return c;
      }
    }
  }
  return std::nullopt;
}

/// The construction of order n, for a caller that checks its own argument:
/// throws std::invalid_argument from `where` (the caller's function) naming
/// `name` (its parameter, e.g. "signs.size()") and the sizes that have a
/// construction, when n ≤ 0 or oq has none for n.
inline HadamardConstruction hadamard_construction(Eigen::Index n, std::string_view where, std::string_view name) {
  detail::require(n > 0, where, name, " must be positive, got ", n);
  const std::optional<HadamardConstruction> c = find_hadamard_construction(n);
  detail::require(c.has_value(), where, name, " must be ", detail_hadamard::kSizeRule, ", got ", n,
                  ": no construction exists for ", n,
                  " (a block-diagonal Hadamard with a constructible block size dividing it does)");
  return *c;
}

namespace detail_hadamard {

// Throws std::invalid_argument naming `name` unless an n × n matrix can be
// indexed (n² ≤ Eigen::Index's max). Checked before the construction search,
// whose trial division takes seconds for a huge n (issue 23): the cheap
// check first.
inline void require_square_fits(Eigen::Index n, std::string_view where, std::string_view name) {
  detail::require(n > 0, where, name, " must be positive, got ", n);
  detail::require(n <= std::numeric_limits<Eigen::Index>::max() / n, where, name, " = ", n,
                  " is too large: an n x n matrix has more entries than Eigen::Index can count");
}

}  // namespace detail_hadamard

/// The construction of order n; throws std::invalid_argument naming n when
/// there is none (or n ≤ 0).
inline HadamardConstruction hadamard_construction(Eigen::Index n) {
  return hadamard_construction(n, "oq::transform::hadamard_construction", "n");
}

namespace detail_hadamard {

// Writes the ±1 entries of H_n (n × n) into h, in h's scalar type: one
// allocation, the caller's.
template <class Derived>
void fill_hadamard(const HadamardConstruction& c, Eigen::MatrixBase<Derived>& h) {
  using T = typename Derived::Scalar;
  const Eigen::Index p = c.sylvester_size();
  // Sylvester 1867, H_2s = [[H_s, H_s], [H_s, −H_s]], built in the top-left
  // P × P block: natural order, H_P(b, d) = (−1)^popcount(b & d). Written
  // as contiguous column segments, which Eigen copies far faster than 2-D
  // blocks.
  h(0, 0) = T(1);
  for (Eigen::Index s = 1; s < p; s *= 2) {
    for (Eigen::Index j = 0; j < s; ++j) {
      h.col(j).segment(s, s) = h.col(j).head(s);
      h.col(s + j).head(s) = h.col(j).head(s);
      h.col(s + j).segment(s, s) = -h.col(j).head(s);
    }
  }
  if (c.base == 1) return;
  // H_n(a·P + b, c·P + d) = H_K(a, c)·H_P(b, d): H_K's index is the outer one.
  // Block (0, 0) holds H_P until every other block has been copied from it;
  // each block is a copy or a negation, never an integer multiply.
  const Eigen::MatrixXi hk = base_matrix(c);
  for (Eigen::Index col = 0; col < c.base; ++col) {
    for (Eigen::Index row = 0; row < c.base; ++row) {
      if (row == 0 && col == 0) continue;
      for (Eigen::Index d = 0; d < p; ++d) {
        if (hk(row, col) > 0) {
          h.col(col * p + d).segment(row * p, p) = h.col(d).head(p);
        } else {
          h.col(col * p + d).segment(row * p, p) = -h.col(d).head(p);
        }
      }
    }
  }
  if (hk(0, 0) < 0) {
    for (Eigen::Index d = 0; d < p; ++d) h.col(d).head(p) = -h.col(d).head(p);
  }
}

}  // namespace detail_hadamard

/// The ±1 Hadamard matrix H_n = H_K ⊗ H_(2^m) (H_n·H_nᵀ = n·I, not
/// normalised). Throws std::invalid_argument naming n when oq has no
/// construction for it.
inline Eigen::MatrixXi hadamard_matrix(Eigen::Index n) {
  detail_hadamard::require_square_fits(n, "oq::transform::hadamard_matrix", "n");
  const HadamardConstruction c = hadamard_construction(n, "oq::transform::hadamard_matrix", "n");
  Eigen::MatrixXi h(n, n);
  detail_hadamard::fill_hadamard(c, h);
  return h;
}

/// Writes the ±1 entries of H_n into `out`, any writable n × n Eigen
/// expression of any signed scalar (an int8 map of your own buffer, a block
/// of a bigger matrix, …), taken as a const reference and written through,
/// the Eigen idiom. No allocation beyond H_K. An unsigned scalar cannot hold
/// −1 (it would wrap to 255, say) and does not compile.
template <class Derived>
void hadamard_matrix_into(Eigen::Index n, const Eigen::MatrixBase<Derived>& out_) {
  // !is_unsigned rather than is_signed: numeric_limits is false for scalars
  // without a specialisation (std::complex, autodiff types), which hold −1.
  static_assert(!std::is_unsigned_v<typename Derived::Scalar>,
                "hadamard_matrix_into needs a signed scalar: H_n has entries -1");
  constexpr std::string_view kWhere = "oq::transform::hadamard_matrix_into";
  auto& out = const_cast<Eigen::MatrixBase<Derived>&>(out_);
  // The shape first: the construction search can take seconds for a huge n.
  detail::require(out.rows() == n && out.cols() == n, kWhere, "out must be ", n, " x ", n, ", got ", out.rows(),
                  " x ", out.cols());
  const HadamardConstruction c = hadamard_construction(n, kWhere, "n");
  detail_hadamard::fill_hadamard(c, out);
}

/// The orthogonal M = H_n/√n that hadamard_rows(x) multiplies rows by
/// (x ← x·M). Fold it into weights as W·M.
template <class Scalar = double>
Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic> hadamard_orthogonal(Eigen::Index n) {
  static_assert(std::is_floating_point_v<Scalar>, "hadamard_orthogonal needs a floating-point scalar");
  detail_hadamard::require_square_fits(n, "oq::transform::hadamard_orthogonal", "n");
  const HadamardConstruction c =
      hadamard_construction(n, "oq::transform::hadamard_orthogonal", "n");
  Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic> m(n, n);
  detail_hadamard::fill_hadamard(c, m);
  m *= static_cast<Scalar>(1.0 / std::sqrt(static_cast<double>(n)));
  return m;
}

/// The orthogonal M = diag(H_b, …, H_b)/√b (width/b blocks) that
/// block_hadamard_rows(x, block_size) multiplies rows of width `width` by.
template <class Scalar = double>
Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic> block_hadamard_orthogonal(Eigen::Index width,
                                                                                Eigen::Index block_size) {
  static_assert(std::is_floating_point_v<Scalar>, "block_hadamard_orthogonal needs a floating-point scalar");
  constexpr std::string_view kWhere = "oq::transform::block_hadamard_orthogonal";
  detail_hadamard::require_square_fits(width, kWhere, "width");
  detail::require(block_size > 0, kWhere, "block_size must be positive, got ", block_size);
  detail::require(width % block_size == 0, kWhere, "block_size must divide width = ", width, ", got ",
                  block_size);
  hadamard_construction(block_size, kWhere, "block_size");  // after the cheap checks
  const Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic> block = hadamard_orthogonal<Scalar>(block_size);
  Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic> m =
      Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>::Zero(width, width);
  for (Eigen::Index s = 0; s < width; s += block_size) m.block(s, s, block_size, block_size) = block;
  return m;
}

/// In place, every row: x ← x·H_n/√n, the fast Walsh–Hadamard transform in
/// natural (Sylvester) order, O(n log n) per row, n = x.cols() a power of two.
/// H_n is symmetric and orthogonal once normalised, so applying it twice gives
/// x back. x is any writable Eigen expression of float or double (blocks,
/// maps, either storage order), taken as a const reference and written
/// through, the Eigen idiom.
template <class Derived>
void fwht_rows(const Eigen::MatrixBase<Derived>& x_) {
  using Scalar = typename Derived::Scalar;
  static_assert(std::is_floating_point_v<Scalar>, "fwht_rows needs a floating-point matrix");
  constexpr std::string_view kWhere = "oq::transform::fwht_rows";
  auto& x = const_cast<Eigen::MatrixBase<Derived>&>(x_);
  detail::require(detail_hadamard::is_power_of_two(x.cols()), kWhere,
                  "x.cols() must be a power of two (use hadamard_rows for K * 2^m), got ", x.cols());
  detail::require_finite(x, kWhere, "x");
  const HadamardConstruction c{x.cols(), 1, detail_hadamard::log2_exact(x.cols()), HadamardKind::kSylvester, 0};
  detail_hadamard::apply_plan_without_overflow(x, detail_hadamard::Plan<Scalar>(c, Direction::kForward), kWhere);
}

/// In place, every row: x ← x·M (kForward) or x·Mᵀ = x·M⁻¹ (kInverse) with
/// M = (H_K ⊗ H_(2^m))/√n, n = x.cols() (hadamard_orthogonal(n) is M).
/// Throws std::invalid_argument when n has no construction, std::domain_error
/// on NaN/Inf.
template <class Derived>
void hadamard_rows(const Eigen::MatrixBase<Derived>& x_, Direction direction = Direction::kForward) {
  using Scalar = typename Derived::Scalar;
  static_assert(std::is_floating_point_v<Scalar>, "hadamard_rows needs a floating-point matrix");
  constexpr std::string_view kWhere = "oq::transform::hadamard_rows";
  auto& x = const_cast<Eigen::MatrixBase<Derived>&>(x_);
  const HadamardConstruction c = hadamard_construction(x.cols(), kWhere, "x.cols()");
  detail::require_finite(x, kWhere, "x");
  detail_hadamard::apply_plan_without_overflow(x, detail_hadamard::Plan<Scalar>(c, direction), kWhere);
}

/// In place, every row: x ← x·M or x·Mᵀ with the block-diagonal
/// M = diag(H_b, …, H_b)/√b (block_hadamard_orthogonal(x.cols(), b) is M).
/// Each block of b channels is rotated on its own, which suits tensor-parallel
/// shards and sizes with no construction of their own (172·64 with b = 64). Throws std::invalid_argument unless b has a construction and
/// divides x.cols(); std::domain_error on NaN/Inf.
template <class Derived>
void block_hadamard_rows(const Eigen::MatrixBase<Derived>& x_, Eigen::Index block_size,
                         Direction direction = Direction::kForward) {
  using Scalar = typename Derived::Scalar;
  static_assert(std::is_floating_point_v<Scalar>, "block_hadamard_rows needs a floating-point matrix");
  constexpr std::string_view kWhere = "oq::transform::block_hadamard_rows";
  auto& x = const_cast<Eigen::MatrixBase<Derived>&>(x_);
  detail::require(block_size > 0, kWhere, "block_size must be positive, got ", block_size);
  detail::require(x.cols() > 0, kWhere, "x.cols() must be positive, got ", x.cols());
  detail::require(x.cols() % block_size == 0, kWhere, "block_size must divide x.cols() = ", x.cols(), ", got ",
                  block_size);
  // After the cheap checks: the search's trial division takes seconds for
  // a huge block_size (issue 23), which cannot divide a real x anyway.
  const HadamardConstruction c = hadamard_construction(block_size, kWhere, "block_size");
  detail::require_finite(x, kWhere, "x");
  const detail_hadamard::Plan<Scalar> plan(c, direction);
  // The overflow check first, for every block (x unchanged if one throws):
  // a copy of x only when some entry is near the largest value.
  const double n = static_cast<double>(block_size);
  const double largest = static_cast<double>(std::numeric_limits<Scalar>::max());
  if (x.size() > 0 && static_cast<double>(x.cwiseAbs().maxCoeff()) * n > 0.5 * largest) {
    Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic> copy = x;
    for (Eigen::Index s = 0; s < copy.cols(); s += block_size) {
      auto block = copy.middleCols(s, block_size);
      detail_hadamard::apply_plan_without_overflow(block, plan, kWhere, s);
    }
    x = copy;
    return;
  }
  for (Eigen::Index s = 0; s < x.cols(); s += block_size) {
    auto block = x.middleCols(s, block_size);
    detail_hadamard::apply_plan(block, plan);
  }
}

}  // namespace oq::transform
