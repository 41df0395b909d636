#include <oq/transform/hadamard.hpp>
#include <oq/detail/galois_field.hpp>

#include <doctest/doctest.h>

#include "support/matrices.hpp"
#include "support/subprocess.hpp"

#include <cmath>
#include <cstdint>
#include <algorithm>
#include <bit>
#include <chrono>
#include <limits>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

using namespace oq::transform;
using oq::test::MatrixX;
using oq::test::RowMatrixX;

namespace {

constexpr Eigen::Index kMaxSize = 4096;  // sizes checked exhaustively
constexpr Eigen::Index kMaxBase = 256;   // K of the sizes checked exhaustively

// Independent enumeration (a sieve, not the library's trial division): the
// orders Paley 1933 gives, K = q + 1 (q ≡ 3 mod 4) and K = 2(q + 1) (q ≡ 1 mod 4),
// for q prime and for q a higher power of a prime, plus K = 1, then every
// K·2^m (Sylvester doubling).
struct PaleyOrders {
  std::set<Eigen::Index> first;         // q + 1, q prime ≡ 3 (mod 4)
  std::set<Eigen::Index> second;        // 2(q + 1), q prime ≡ 1 (mod 4)
  std::set<Eigen::Index> first_power;   // q + 1, q = p^k ≡ 3 (mod 4), k ≥ 2
  std::set<Eigen::Index> second_power;  // 2(q + 1), q = p^k ≡ 1 (mod 4), k ≥ 2
  std::set<Eigen::Index> all;           // all of them, and 1
};

PaleyOrders paley_orders(Eigen::Index limit) {
  std::vector<bool> composite(static_cast<std::size_t>(limit + 1), false);
  PaleyOrders orders;
  orders.all.insert(1);
  for (Eigen::Index q = 2; q <= limit; ++q) {
    if (composite[static_cast<std::size_t>(q)]) continue;
    for (Eigen::Index k = q * q; k <= limit; k += q) composite[static_cast<std::size_t>(k)] = true;
    if (q % 4 == 3 && q + 1 <= limit) orders.first.insert(q + 1);
    if (q % 4 == 1 && 2 * (q + 1) <= limit) orders.second.insert(2 * (q + 1));
    for (Eigen::Index power = q * q; power + 1 <= limit; power *= q) {
      if (power % 4 == 3) orders.first_power.insert(power + 1);
      if (power % 4 == 1 && 2 * (power + 1) <= limit) orders.second_power.insert(2 * (power + 1));
    }
  }
  for (const auto* set : {&orders.first, &orders.second, &orders.first_power, &orders.second_power}) {
    orders.all.insert(set->begin(), set->end());
  }
  return orders;
}

std::set<Eigen::Index> doubled(const std::set<Eigen::Index>& bases, Eigen::Index limit) {
  std::set<Eigen::Index> sizes;
  for (Eigen::Index k : bases) {
    for (Eigen::Index n = k; n <= limit; n *= 2) sizes.insert(n);
  }
  return sizes;
}

// Every constructible size ≤ kMaxSize whose K is ≤ kMaxBase, from the independent enumeration.
std::vector<Eigen::Index> sizes_under_test() {
  const std::set<Eigen::Index> sizes = doubled(paley_orders(kMaxBase).all, kMaxSize);
  return {sizes.begin(), sizes.end()};
}

// Sylvester's closed form as an entry function: H_P(b, d) = (−1)^popcount(b & d).
int sylvester_entry(Eigen::Index b, Eigen::Index d) {
  return std::popcount(static_cast<std::uint64_t>(b & d)) % 2 == 0 ? 1 : -1;
}

// Sylvester 1867 in natural order by its closed form H_P(b, d) =
// (−1)^popcount(b & d) (the library builds it by doubling,
// H_2P = [[H_P, H_P], [H_P, −H_P]]).
Eigen::MatrixXi sylvester_closed_form(Eigen::Index p) {
  Eigen::MatrixXi h(p, p);
  for (Eigen::Index d = 0; d < p; ++d) {
    for (Eigen::Index b = 0; b < p; ++b) h(b, d) = sylvester_entry(b, d);
  }
  return h;
}

// Legendre symbol by Euler's criterion a^((q−1)/2) mod q (the library uses a
// table of squares instead).
int legendre_euler(Eigen::Index a, Eigen::Index q) {
  a = ((a % q) + q) % q;
  if (a == 0) return 0;
  Eigen::Index result = 1;
  Eigen::Index base = a;
  for (Eigen::Index e = (q - 1) / 2; e > 0; e /= 2) {
    if (e % 2 == 1) result = result * base % q;
    base = base * base % q;
  }
  return result == 1 ? 1 : -1;
}

// GF(q) apart from the library's tables: elements as base-p digits (the
// documented numbering), products by the schoolbook rule modulo the
// library's modulus f (a convention: which irreducible f numbers the
// elements), χ by Euler's criterion a^((q−1)/2) = ±1, a table over GF(q).
struct IndependentField {
  Eigen::Index p = 0, q = 0;
  int k = 0;
  std::vector<Eigen::Index> f;  // a_0 … a_(k−1), 1
  std::vector<int> chi;         // χ(a), a in [0, q)

  IndependentField() = default;
  IndependentField(Eigen::Index prime, int degree) : p(prime), k(degree) {
    f = oq::detail::GaloisField(prime, degree).modulus();
    f.push_back(1);
    q = 1;
    for (int i = 0; i < k; ++i) q *= p;
    chi.resize(static_cast<std::size_t>(q));
    for (Eigen::Index a = 0; a < q; ++a) {
      const Eigen::Index e = power(a, (q - 1) / 2);
      chi[static_cast<std::size_t>(a)] = a == 0 ? 0 : e == 1 ? 1 : e == p - 1 ? -1 : 99;  // 99: not ±1, a bug
    }
  }
  std::vector<Eigen::Index> digits(Eigen::Index a) const {
    std::vector<Eigen::Index> d(static_cast<std::size_t>(k));
    for (auto& v : d) {
      v = a % p;
      a /= p;
    }
    return d;
  }
  Eigen::Index number(const std::vector<Eigen::Index>& d) const {
    Eigen::Index a = 0;
    for (auto it = d.rbegin(); it != d.rend(); ++it) a = a * p + *it;
    return a;
  }
  Eigen::Index sub(Eigen::Index a, Eigen::Index b) const {
    std::vector<Eigen::Index> x = digits(a);
    const std::vector<Eigen::Index> y = digits(b);
    for (std::size_t i = 0; i < x.size(); ++i) x[i] = (x[i] - y[i] + p) % p;
    return number(x);
  }
  Eigen::Index mul(Eigen::Index a, Eigen::Index b) const {
    const std::vector<Eigen::Index> x = digits(a), y = digits(b);
    std::vector<Eigen::Index> r(2 * static_cast<std::size_t>(k) - 1, 0);
    for (std::size_t i = 0; i < x.size(); ++i)
      for (std::size_t j = 0; j < y.size(); ++j) r[i + j] = (r[i + j] + x[i] * y[j]) % p;
    for (std::size_t top = r.size() - 1; top >= static_cast<std::size_t>(k); --top) {
      const Eigen::Index t = r[top];
      for (std::size_t i = 0; i <= static_cast<std::size_t>(k); ++i) {
        auto& v = r[top - static_cast<std::size_t>(k) + i];
        v = ((v - t * f[i]) % p + p) % p;
      }
    }
    r.resize(static_cast<std::size_t>(k));
    return number(r);
  }
  Eigen::Index power(Eigen::Index a, Eigen::Index e) const {
    Eigen::Index result = 1;
    for (; e > 0; e /= 2) {
      if (e % 2 == 1) result = mul(result, a);
      a = mul(a, a);
    }
    return result;
  }
  int chi_of_difference(Eigen::Index a, Eigen::Index b) const { return chi[static_cast<std::size_t>(sub(a, b))]; }
};

// H_n(i, j) from the documented formulas alone, written independently of the
// library's generator: H_n(a·P + b, c·P + d) = H_K(a, c)·H_P(b, d) with
// H_P(b, d) = (−1)^popcount(b & d), and H_K Paley I, I + [[0, jᵀ], [−j, Q]],
// or Paley II, S ⊗ [[1, 1], [1, −1]] + I ⊗ [[1, −1], [−1, −1]], with
// S = [[0, jᵀ], [j, Q]], Q(a, b) = χ(a − b) (Euler's criterion: mod q for
// a prime q, over IndependentField for a prime power). Only the choice of K
// and m (which construction) and the modulus of GF(p^k) come from the library.
struct IndependentHadamard {
  Eigen::Index k, p, q;
  HadamardKind kind;
  IndependentField field;  // q a prime power p^k with k ≥ 2 only
  explicit IndependentHadamard(Eigen::Index n) {
    const HadamardConstruction c = hadamard_construction(n);
    k = c.base;
    p = Eigen::Index(1) << c.power;
    q = c.field_order();
    kind = c.kind;
    if (c.degree > 1) field = IndependentField(c.prime, c.degree);
  }
  int jacobsthal(Eigen::Index a, Eigen::Index b) const {
    return field.q != 0 ? field.chi_of_difference(a, b) : legendre_euler(a - b, q);
  }
  int base(Eigen::Index a, Eigen::Index c) const {
    if (kind == HadamardKind::kSylvester) return 1;  // K = 1
    if (kind == HadamardKind::kPaleyI) {
      const int skew = a == 0 ? (c == 0 ? 0 : 1) : c == 0 ? -1 : jacobsthal(a - 1, c - 1);
      return skew + (a == c ? 1 : 0);
    }
    const Eigen::Index i = a / 2, j = c / 2;
    const int u = static_cast<int>(a % 2), v = static_cast<int>(c % 2);
    if (i == j) return u == 0 ? (v == 0 ? 1 : -1) : -1;                       // [[1, −1], [−1, −1]]
    const int s = (i == 0 || j == 0) ? 1 : jacobsthal(i - 1, j - 1);         // S(i, j)
    return s * (u == 1 && v == 1 ? -1 : 1);                                   // S(i, j)·[[1, 1], [1, −1]]
  }
  int operator()(Eigen::Index i, Eigen::Index j) const {
    return base(i / p, j / p) * sylvester_entry(i % p, j % p);
  }
};

// x·H_n/√n for every row: the float64 plain-loop reference, from the ±1
// entries h(i, j) (a matrix, or a function where the n × n matrix would cost
// more memory than the test is worth).
template <class Entry>
MatrixX<double> rows_times_ref(const MatrixX<double>& x, const Entry& h) {
  const Eigen::Index n = x.cols();
  const double scale = 1.0 / std::sqrt(static_cast<double>(n));
  MatrixX<double> y(x.rows(), n);
  for (Eigen::Index r = 0; r < x.rows(); ++r) {
    for (Eigen::Index j = 0; j < n; ++j) {
      double sum = 0.0;
      for (Eigen::Index i = 0; i < n; ++i) sum += x(r, i) * h(i, j);
      y(r, j) = sum * scale;
    }
  }
  return y;
}


// Largest over rows of ‖y_r − ref_r‖ / ‖x_r‖ (‖ref_r‖ = ‖x_r‖: M is orthogonal).
template <class T>
double max_row_error(const MatrixX<T>& y, const MatrixX<double>& ref, const MatrixX<double>& x) {
  double worst = 0.0;
  for (Eigen::Index r = 0; r < x.rows(); ++r) {
    worst = std::max(worst, (y.row(r).template cast<double>() - ref.row(r)).norm() / x.row(r).norm());
  }
  return worst;
}

// Rounding errors of long sums behave like random walks (Higham & Mary 2019,
// probabilistic error analysis): the fast path's m butterfly stages and K-term
// dot products give a relative row error of about √(m + K)·u_T, the float64
// reference's n-term sums √n·u_64. Ten times that: an index-order, sign or
// normalisation bug gives an error of order 1. Below the 1e-12
// (double) and 1e-5 (float) for every size tested here.
template <class T>
double tolerance(const HadamardConstruction& c) {
  const double u = std::numeric_limits<T>::epsilon() / 2;
  const double u64 = std::numeric_limits<double>::epsilon() / 2;
  return 10.0 * (std::sqrt(static_cast<double>(c.power + c.base)) * u +
                 std::sqrt(static_cast<double>(c.size)) * u64);
}

template <class T>
double brief_tolerance() {
  return std::is_same_v<T, double> ? 1e-12 : 1e-5;
}

}  // namespace

TEST_CASE("constructible sizes: the library's list equals an independent enumeration") {
  const PaleyOrders orders = paley_orders(kMaxSize);
  const std::set<Eigen::Index>& bases = orders.all;
  const std::set<Eigen::Index> sizes = doubled(bases, kMaxSize);
  for (Eigen::Index n = 1; n <= kMaxSize; ++n) {
    CAPTURE(n);
    const std::optional<HadamardConstruction> c = find_hadamard_construction(n);
    REQUIRE(c.has_value() == sizes.contains(n));
    if (!c) continue;
    CHECK(c->size == n);
    CHECK(c->sylvester_size() * c->base == n);
    CHECK(bases.contains(c->base));
    // The smallest K (largest power of two) is the one used.
    for (Eigen::Index p = 2 * c->sylvester_size(); n % p == 0; p *= 2) CHECK_FALSE(bases.contains(n / p));
    const bool over_prime = c->degree == 1;
    switch (c->kind) {
      case HadamardKind::kSylvester:
        CHECK(c->base == 1);
        CHECK(c->prime == 0);
        CHECK(c->degree == 0);
        CHECK(c->field_order() == 0);
        break;
      case HadamardKind::kPaleyI:
        CHECK((over_prime ? orders.first : orders.first_power).contains(c->base));
        CHECK(c->base == c->field_order() + 1);
        CHECK(c->field_order() % 4 == 3);
        // A prime before a prime power for one K.
        if (!over_prime) CHECK_FALSE((orders.first.contains(c->base) || orders.second.contains(c->base)));
        break;
      case HadamardKind::kPaleyII:
        CHECK((over_prime ? orders.second : orders.second_power).contains(c->base));
        CHECK(c->base == 2 * (c->field_order() + 1));
        CHECK(c->field_order() % 4 == 1);
        // Paley I is preferred when both apply over the same kind of field
        // (12 = 11 + 1 = 2·(5 + 1)), and a prime over a prime power (28 =
        // 2·(13 + 1) is Paley II, not Paley I over GF(27)).
        CHECK_FALSE(orders.first.contains(c->base));
        if (!over_prime) CHECK_FALSE((orders.first_power.contains(c->base) || orders.second.contains(c->base)));
        break;
    }
    CHECK(c->degree >= 0);
  }
  // Pinned: the multiples of 4 up to 256 that neither Paley (over any
  // prime power) nor doubling reach (worked out separately from the prime
  // lists; 92, 116, 156, 172, … need other constructions altogether).
  std::vector<Eigen::Index> missing;
  for (Eigen::Index n = 4; n <= 256; n += 4) {
    if (!find_hadamard_construction(n)) missing.push_back(n);
  }
  CHECK(missing == std::vector<Eigen::Index>{92, 116, 156, 172, 184, 188, 232, 236});
  // Examples from docs/design.md §5 and the issue.
  CHECK(hadamard_construction(12).kind == HadamardKind::kPaleyI);
  CHECK(hadamard_construction(28).kind == HadamardKind::kPaleyII);
  CHECK(hadamard_construction(28).prime == 13);
  CHECK(hadamard_construction(28).degree == 1);
  CHECK(hadamard_construction(36).prime == 17);
  CHECK(hadamard_construction(40).base == 20);
  CHECK(hadamard_construction(40).power == 1);
  CHECK_FALSE(find_hadamard_construction(172).has_value());
  // The prime powers: 52 over GF(5²), 100 over GF(7²), 244 over GF(3⁵), 344 over GF(7³).
  struct Pinned {
    Eigen::Index n, base;
    int power;
    HadamardKind kind;
    Eigen::Index prime;
    int degree;
  };
  for (const Pinned& pin : {Pinned{52, 52, 0, HadamardKind::kPaleyII, 5, 2}, Pinned{100, 100, 0, HadamardKind::kPaleyII, 7, 2},
                            Pinned{244, 244, 0, HadamardKind::kPaleyI, 3, 5}, Pinned{344, 344, 0, HadamardKind::kPaleyI, 7, 3},
                            Pinned{104, 52, 1, HadamardKind::kPaleyII, 5, 2},  // was 103 + 1
                            Pinned{11008, 344, 5, HadamardKind::kPaleyI, 7, 3},  // was 2·(5503 + 1)
                            Pinned{5504, 344, 4, HadamardKind::kPaleyI, 7, 3}}) {
    CAPTURE(pin.n);
    const HadamardConstruction c = hadamard_construction(pin.n);
    CHECK(c.base == pin.base);
    CHECK(c.power == pin.power);
    CHECK(c.kind == pin.kind);
    CHECK(c.prime == pin.prime);
    CHECK(c.degree == pin.degree);
  }
  CHECK(hadamard_construction(344).field_order() == 343);
  CHECK(hadamard_construction(1 << 20).base == 1);
  CHECK(hadamard_construction(1 << 20).power == 20);
}

TEST_CASE("H·Hᵀ = n·I exactly for every constructible size K·2^m with K ≤ 256 and n ≤ 4096") {
  std::mt19937_64 rng(7);
  std::uniform_int_distribution<int> coin(0, 1);
  std::map<Eigen::Index, Eigen::MatrixXi> sylvester;  // by P, built once
  // One buffer for all sizes (hadamard_matrix_into its top-left corner): a
  // fresh 64 MiB matrix per size would spend most of the test in page faults.
  Eigen::MatrixXi buffer(kMaxSize, kMaxSize);
  for (Eigen::Index n : sizes_under_test()) {
    CAPTURE(n);
    const HadamardConstruction c = hadamard_construction(n);
    const auto h = buffer.topLeftCorner(n, n);
    hadamard_matrix_into(n, h);
    REQUIRE((h.array().abs() == 1).all());
    if (n <= 512) {
      CHECK(hadamard_matrix(n) == h);
      // The full Gram matrix, exact: float holds the integers ±n and every
      // partial sum (|·| ≤ 512 < 2^24) exactly.
      const Eigen::MatrixXf hf = h.cast<float>();
      Eigen::MatrixXf gram = Eigen::MatrixXf::Zero(n, n);
      gram.selfadjointView<Eigen::Lower>().rankUpdate(hf);
      const Eigen::MatrixXf lower = gram.triangularView<Eigen::Lower>();
      CHECK(lower == static_cast<float>(n) * Eigen::MatrixXf::Identity(n, n));
    }
    // Every size (the full Gram matrix of all of them would take minutes): the
    // documented Kronecker order H_n(a·P + b, c·P + d) = H_K(a, c)·H_P(b, d),
    // against H_K (itself a size of this loop, K ≤ 256, so Gram-checked in
    // full) and Sylvester's closed form (Gram-checked up to 512 here), which
    // makes H_n·H_nᵀ = (H_K·H_Kᵀ) ⊗ (H_P·H_Pᵀ) = K·I ⊗ P·I = n·I; and
    // Freivalds' check H·(Hᵀ·v) = n·v in exact integers for random ±1 vectors
    // v, which catches a non-Hadamard H with probability ≥ 1/2 per vector.
    const Eigen::Index p = c.sylvester_size();
    const Eigen::MatrixXi hk = hadamard_matrix(c.base);
    REQUIRE(hadamard_construction(c.base).power == 0);
    REQUIRE((hk.array().abs() == 1).all());
    auto [found, inserted] = sylvester.try_emplace(p);
    if (inserted) found->second = sylvester_closed_form(p);
    const Eigen::MatrixXi& hp = found->second;
    bool kronecker = true;
    for (Eigen::Index a = 0; a < c.base; ++a) {
      for (Eigen::Index b = 0; b < c.base; ++b) {
        const auto block = h.block(a * p, b * p, p, p);
        kronecker &= hk(a, b) > 0 ? block == hp : block == -hp;
      }
    }
    CHECK(kronecker);
    for (int trial = 0; trial < 2; ++trial) {
      Eigen::VectorXi v(n);
      for (Eigen::Index i = 0; i < n; ++i) v(i) = coin(rng) == 1 ? 1 : -1;
      const Eigen::VectorXi w = h.transpose() * v;
      const Eigen::VectorXi hw = h * w;
      CHECK(hw == n * v);
    }
  }
}

TEST_CASE("hadamard_matrix_into writes any scalar type and layout") {
  for (Eigen::Index n : {1, 12, 28, 40, 96, 128}) {
    CAPTURE(n);
    const Eigen::MatrixXi h = hadamard_matrix(n);
    Eigen::Matrix<std::int8_t, Eigen::Dynamic, Eigen::Dynamic> small(n, n);
    hadamard_matrix_into(n, small);
    CHECK(small.cast<int>() == h);
    std::vector<float> storage(static_cast<std::size_t>(n * n));
    Eigen::Map<RowMatrixX<float>> mapped(storage.data(), n, n);
    hadamard_matrix_into(n, mapped);
    CHECK(mapped == h.cast<float>());
    MatrixX<double> big = MatrixX<double>::Constant(n + 3, n + 2, 7.0);
    hadamard_matrix_into(n, big.block(1, 2, n, n));
    CHECK(big.block(1, 2, n, n) == h.cast<double>());
    CHECK((big.topRows(1).array() == 7.0).all());
    CHECK((big.leftCols(2).array() == 7.0).all());
    CHECK((big.bottomRows(2).array() == 7.0).all());
  }
}

TEST_CASE("H_K is Paley's matrix, generated as documented") {
  // Sizes that are their own K (m = 0), so hadamard_matrix(k) is H_K itself.
  for (Eigen::Index k : {12, 20, 44, 60, 68, 84, 108, 140, 252}) {
    CAPTURE(k);
    REQUIRE(hadamard_construction(k).kind == HadamardKind::kPaleyI);
    REQUIRE(hadamard_construction(k).power == 0);
    const Eigen::Index q = k - 1;
    const Eigen::MatrixXi h = hadamard_matrix(k);
    for (Eigen::Index i = 0; i < k; ++i) {
      for (Eigen::Index j = 0; j < k; ++j) {
        // I + [[0, jᵀ], [−j, Q]], Q(a, b) = χ(a − b).
        int expected = i == 0 ? (j == 0 ? 0 : 1) : j == 0 ? -1 : legendre_euler((i - 1) - (j - 1), q);
        if (i == j) expected += 1;
        CHECK(h(i, j) == expected);
      }
    }
    // Skew-Hadamard: H + Hᵀ = 2I, so H is not symmetric and the inverse
    // transform needs Hᵀ.
    CHECK(Eigen::MatrixXi(h + h.transpose()) == 2 * Eigen::MatrixXi::Identity(k, k));
  }
  for (Eigen::Index k : {28, 36, 76, 124, 148, 196}) {
    CAPTURE(k);
    REQUIRE(hadamard_construction(k).kind == HadamardKind::kPaleyII);
    REQUIRE(hadamard_construction(k).power == 0);
    const Eigen::Index q = k / 2 - 1;
    const Eigen::MatrixXi h = hadamard_matrix(k);
    const int a[2][2] = {{1, 1}, {1, -1}};
    const int b[2][2] = {{1, -1}, {-1, -1}};
    for (Eigen::Index i = 0; i <= q; ++i) {
      for (Eigen::Index j = 0; j <= q; ++j) {
        const int s = i == j ? 0 : (i == 0 || j == 0) ? 1 : legendre_euler((i - 1) - (j - 1), q);
        for (int u = 0; u < 2; ++u) {
          for (int v = 0; v < 2; ++v) CHECK(h(2 * i + u, 2 * j + v) == (i == j ? b[u][v] : s * a[u][v]));
        }
      }
    }
    CHECK(h == h.transpose());
  }
}

TEST_CASE_TEMPLATE("fwht_rows equals x·H/√n with the explicit Sylvester matrix", T, float, double) {
  for (Eigen::Index n = 1; n <= kMaxSize; n *= 2) {
    CAPTURE(n);
    const HadamardConstruction c = hadamard_construction(n);
    const MatrixX<T> x = oq::test::gaussian<T>(2, n, static_cast<std::uint64_t>(n));
    const MatrixX<double> xd = x.template cast<double>();
    const MatrixX<double> ref = rows_times_ref(xd, sylvester_entry);
    MatrixX<T> y = x;
    fwht_rows(y);
    CHECK(max_row_error(y, ref, xd) <= tolerance<T>(c));
    CHECK(tolerance<T>(c) <= brief_tolerance<T>());
    // Symmetric and orthogonal: applying it again gives x back.
    fwht_rows(y);
    CHECK(max_row_error(y, xd, xd) <= 2 * tolerance<T>(c));
  }
}

TEST_CASE_TEMPLATE("hadamard_rows equals x·(H_K ⊗ H_2^m)/√n with the explicit matrix", T, float, double) {
  std::vector<Eigen::Index> sizes;
  for (Eigen::Index n : sizes_under_test()) {
    if (n <= 512) sizes.push_back(n);
  }
  for (Eigen::Index n : {768, 2816, 3840}) sizes.push_back(n);  // K = 12, 44, 60 with P = 64
  for (Eigen::Index n : sizes) {
    CAPTURE(n);
    const HadamardConstruction c = hadamard_construction(n);
    const MatrixX<T> x = oq::test::gaussian<T>(2, n, static_cast<std::uint64_t>(n) + 1000);
    const MatrixX<double> xd = x.template cast<double>();
    // Against the matrix built from the formulas, not the library's
    // hadamard_matrix (issue 23: a shared error in the Kronecker order or
    // H_K would have passed), and the library's matrix against it too.
    const IndependentHadamard independent(n);
    const MatrixX<double> ref = rows_times_ref(xd, independent);
    if (n <= 512) {
      const Eigen::MatrixXi h = hadamard_matrix(n);
      bool same = true;
      for (Eigen::Index i = 0; i < n; ++i)
        for (Eigen::Index j = 0; j < n; ++j) same = same && h(i, j) == independent(i, j);
      CHECK(same);
    }
    MatrixX<T> y = x;
    hadamard_rows(y);
    CHECK(max_row_error(y, ref, xd) <= tolerance<T>(c));
    CHECK(tolerance<T>(c) <= brief_tolerance<T>());
    // The explicit normalised matrix is the M of the transform (checked on the
    // smaller sizes: a 4096² double matrix costs more to allocate than to test).
    if (n <= 512) {
      const MatrixX<T> m = hadamard_orthogonal<T>(n);
      CHECK(m == (hadamard_matrix(n).cast<T>() * static_cast<T>(1.0 / std::sqrt(static_cast<double>(n)))).eval());
    }
    // Orthogonal: norms are kept, and x·M·Mᵀ = x.
    for (Eigen::Index r = 0; r < x.rows(); ++r) {
      CHECK(std::abs(y.row(r).template cast<double>().norm() - xd.row(r).norm()) <=
            tolerance<T>(c) * xd.row(r).norm());
    }
    hadamard_rows(y, Direction::kInverse);
    CHECK(max_row_error(y, xd, xd) <= 2 * tolerance<T>(c));
  }
}

TEST_CASE("the inverse direction matters when H_K is not symmetric") {
  // Paley I: H_12 + H_12ᵀ = 2I, so x·M·M ≠ x but x·M·Mᵀ = x.
  const MatrixX<double> x = oq::test::gaussian<double>(4, 12 * 8, 3);
  MatrixX<double> twice = x;
  hadamard_rows(twice);
  MatrixX<double> expected = twice;
  hadamard_rows(twice);
  CHECK((twice - x).norm() > 0.5 * x.norm());
  hadamard_rows(expected, Direction::kInverse);
  CHECK((expected - x).norm() <= 1e-12 * x.norm());
  // kInverse alone is x·Mᵀ.
  MatrixX<double> inverse = x;
  hadamard_rows(inverse, Direction::kInverse);
  const MatrixX<double> ref = rows_times_ref(x, Eigen::MatrixXi(hadamard_matrix(96).transpose()));
  CHECK(max_row_error(inverse, ref, x) <= tolerance<double>(hadamard_construction(96)));
}

namespace {

constexpr Eigen::Index kPaleyLimit = 1024;  // Paley I sizes checked in full

// Every n ≤ limit that the library builds from a Paley I factor (K = q + 1,
// q a prime power ≡ 3 mod 4, times 2^m), from the independent enumeration:
// the K of the sieve, doubled, kept where the library's choice for n is
// Paley I (24 = 12·2 is; 8 = 7 + 1 is Sylvester's 2^3; 28 = 27 + 1 is
// Paley II over GF(13); 104 = 103 + 1 is 52·2, Paley II over GF(25)).
std::vector<Eigen::Index> paley_i_sizes(Eigen::Index limit) {
  const PaleyOrders orders = paley_orders(limit);
  std::set<Eigen::Index> bases = orders.first;
  bases.insert(orders.first_power.begin(), orders.first_power.end());
  std::vector<Eigen::Index> sizes;
  for (Eigen::Index n : doubled(bases, limit)) {
    if (hadamard_construction(n).kind == HadamardKind::kPaleyI) sizes.push_back(n);
  }
  return sizes;
}

// H·Hᵀ = n·I in exact integer arithmetic, by an independent route (not a
// matrix product): each row packed as bits, bit j set where H(i, j) = −1, so
// that row i · row k = n − 2·popcount(row_i XOR row_k). Every one of the
// n(n + 1)/2 products of the Gram matrix's lower half; entries must be ±1.
bool gram_is_n_identity(const Eigen::MatrixXi& h) {
  const Eigen::Index n = h.rows(), words = (n + 63) / 64;
  if (h.cols() != n || !(h.array().abs() == 1).all()) return false;
  std::vector<std::uint64_t> bits(static_cast<std::size_t>(n * words), 0);
  for (Eigen::Index i = 0; i < n; ++i) {
    for (Eigen::Index j = 0; j < n; ++j) {
      if (h(i, j) < 0) bits[static_cast<std::size_t>(i * words + j / 64)] |= std::uint64_t{1} << (j % 64);
    }
  }
  for (Eigen::Index i = 0; i < n; ++i) {
    for (Eigen::Index k = 0; k <= i; ++k) {
      std::int64_t differ = 0;
      for (Eigen::Index w = 0; w < words; ++w) {
        differ += std::popcount(bits[static_cast<std::size_t>(i * words + w)] ^
                                bits[static_cast<std::size_t>(k * words + w)]);
      }
      if (n - 2 * differ != (i == k ? n : 0)) return false;
    }
  }
  return true;
}

// Higham's γ_k = k·u/(1 − k·u) for the unit roundoff of T.
template <class T>
double gamma_k(Eigen::Index k) {
  const double u = std::numeric_limits<T>::epsilon() / 2;
  return static_cast<double>(k) * u / (1 - static_cast<double>(k) * u);
}

// Σ_i x_i·h(i, j) for one j by Neumaier's compensated summation in double
// (every term is exact: a float or double times ±1): within
// 2u·|Σ| + O(n·u²)·Σ|x_i| of the exact sum (Higham, "Accuracy and Stability
// of Numerical Algorithms", §4.3), written apart from the library's
// butterflies and dense factor.
template <class T, class Entry>
double compensated_column_sum(const Eigen::Ref<const MatrixX<T>>& x, Eigen::Index r, Eigen::Index j,
                              const Entry& h) {
  double sum = 0.0, compensation = 0.0;
  for (Eigen::Index i = 0; i < x.cols(); ++i) {
    const double term = static_cast<double>(x(r, i)) * h(i, j);
    const double t = sum + term;
    compensation += std::fabs(sum) >= std::fabs(term) ? (sum - t) + term : (term - t) + sum;
    sum = t;
  }
  return sum + compensation;
}

// The fast transform (Direction `direction`) of rows x against (a) the
// compensated reference and (b) the dense product x·H/√n in T, to bounds
// derived for the worst case, entry by entry, with S = Σ_i |x_i| of the row:
//  - the fast path forms each output as a sum of the n terms ±x_i by m
//    butterfly stages and then a K-term product with H_K (Eigen's GEMM, in
//    whatever order: each term passes through at most K additions), then
//    multiplies by the scale 1/√n rounded to T (from double: ≤ u(1 + u));
//    with exact ±1 products that is |ŷ − y| ≤ γ_(m+K+3)·S/√n (Higham, Lemma
//    3.1 and §3.1's sums, each term's error bounded by the additions on its
//    path);
//  - the reference is within 5·u_double·S/√n (the compensated sum's 2u,
//    its O(n·u²) far below u for n ≤ 2^20, and the division by √n);
//  - the dense product x·H (n-term dot products in T) times the scale is
//    within γ_(n+3)·S/√n.
// A wrong sign of one H(i, j) moves output j by 2|x_i|/√n: for double far
// above these bounds; for float the bounds of the larger K are loose (the
// probabilistic test above catches index and sign errors there).
template <class T>
void check_fast_against_dense(Eigen::Index n, const Eigen::MatrixXi& h, Direction direction,
                              std::uint64_t seed) {
  const HadamardConstruction c = hadamard_construction(n);
  MatrixX<T> x(3, n);
  x.row(0) = oq::test::gaussian<T>(1, n, seed);
  x.row(1) = oq::test::heavy_tailed<T>(1, n, seed + 1);
  x.row(2).setConstant(T(1));  // every output but one cancels to 0 exactly
  const Eigen::MatrixXi hm = direction == Direction::kForward ? h : Eigen::MatrixXi(h.transpose());
  const auto entry = [&](Eigen::Index i, Eigen::Index j) { return hm(i, j); };
  MatrixX<T> fast = x;
  hadamard_rows(fast, direction);
  const T scale = static_cast<T>(1.0 / std::sqrt(static_cast<double>(n)));
  const MatrixX<T> dense = (x * hm.cast<T>()) * scale;
  const double root_n = std::sqrt(static_cast<double>(n));
  const double fast_bound = gamma_k<T>(c.power + c.base + 3);
  const double reference_bound = 5 * std::numeric_limits<double>::epsilon() / 2;
  const double dense_bound = gamma_k<T>(n + 3);
  bool within_reference = true, within_dense = true;
  for (Eigen::Index r = 0; r < x.rows(); ++r) {
    const double s = x.row(r).template cast<double>().cwiseAbs().sum() / root_n;
    for (Eigen::Index j = 0; j < n; ++j) {
      const double reference = compensated_column_sum<T>(x, r, j, entry) / root_n;
      const double y = static_cast<double>(fast(r, j));
      within_reference &= std::fabs(y - reference) <= (fast_bound + reference_bound) * s;
      within_dense &= std::fabs(y - static_cast<double>(dense(r, j))) <= (fast_bound + dense_bound) * s;
    }
  }
  CHECK(within_reference);
  CHECK(within_dense);
}

}  // namespace

TEST_CASE("Paley I: H·Hᵀ = n·I in exact integers, and the fast transform within a derived bound of the dense product, for every Paley I size up to 1024") {
  // Issue 23 (mutation list): the Paley I construction had one test case of
  // its own. Every n ≤ 1024 built from a Paley I factor, K = q + 1 with
  // q ≡ 3 (mod 4) a prime power, alone or doubled: 111 sizes from 12 to
  // 1020, 53 of them a K itself; 244, 344, 488, 688 and 976 over GF(3⁵) and
  // GF(7³) (issue 25).
  const std::vector<Eigen::Index> sizes = paley_i_sizes(kPaleyLimit);
  CHECK(sizes.size() == 111);
  CHECK(sizes.front() == 12);
  Eigen::Index bases = 0;
  std::vector<Eigen::Index> over_prime_powers;
  for (Eigen::Index n : sizes) {
    CAPTURE(n);
    const HadamardConstruction c = hadamard_construction(n);
    REQUIRE(c.kind == HadamardKind::kPaleyI);
    CHECK(c.base == c.field_order() + 1);
    CHECK(c.field_order() % 4 == 3);
    if (c.degree > 1) over_prime_powers.push_back(n);
    const Eigen::MatrixXi h = hadamard_matrix(n);
    CHECK(gram_is_n_identity(h));
    if (c.power == 0) {
      ++bases;
      // Skew: H + Hᵀ = 2I (why the inverse needs Hᵀ).
      CHECK(Eigen::MatrixXi(h + h.transpose()) == 2 * Eigen::MatrixXi::Identity(n, n));
    }
    const auto seed = static_cast<std::uint64_t>(n) * 4;
    check_fast_against_dense<float>(n, h, Direction::kForward, seed);
    check_fast_against_dense<double>(n, h, Direction::kForward, seed);
    check_fast_against_dense<float>(n, h, Direction::kInverse, seed + 2);
    check_fast_against_dense<double>(n, h, Direction::kInverse, seed + 2);
  }
  CHECK(bases == 53);  // the K themselves, not only doubled ones
  CHECK(over_prime_powers == std::vector<Eigen::Index>{244, 344, 488, 688, 976});
}

TEST_CASE("prime powers: every size up to 1024 built over GF(p^k), k > 1, is Paley's matrix and H·Hᵀ = n·I") {
  // Issue 25: Paley I and II over GF(p^k). Every n ≤ 1024 whose construction
  // uses a prime power — the new orders 52, 100, 244, 340, 344, 580, 724 and
  // 680, 688, and the sizes that a prime power gives a larger 2^m (104 =
  // 52·2, …) — against the formulas (IndependentHadamard: Euler's criterion
  // over the test's own GF(q) arithmetic), exact Gram, and the fast
  // transform within its derived bound of the dense product, both directions.
  std::vector<Eigen::Index> sizes;
  for (Eigen::Index n = 4; n <= kPaleyLimit; n += 4) {
    const std::optional<HadamardConstruction> c = find_hadamard_construction(n);
    if (c && c->degree > 1) sizes.push_back(n);
  }
  CHECK(sizes == std::vector<Eigen::Index>{52, 100, 104, 200, 208, 244, 340, 344, 400, 416, 488, 580, 680, 688, 724,
                                           800, 832, 976});
  for (Eigen::Index n : sizes) {
    CAPTURE(n);
    const HadamardConstruction c = hadamard_construction(n);
    const Eigen::MatrixXi h = hadamard_matrix(n);
    const IndependentHadamard independent(n);
    bool same = true;
    for (Eigen::Index i = 0; i < n; ++i)
      for (Eigen::Index j = 0; j < n; ++j) same = same && h(i, j) == independent(i, j);
    CHECK(same);
    CHECK(gram_is_n_identity(h));
    if (c.power == 0) {
      if (c.kind == HadamardKind::kPaleyI) {
        CHECK(Eigen::MatrixXi(h + h.transpose()) == 2 * Eigen::MatrixXi::Identity(n, n));  // skew
      } else {
        CHECK(h == h.transpose());  // Paley II is symmetric
      }
    }
    const auto seed = static_cast<std::uint64_t>(n) * 8;
    check_fast_against_dense<float>(n, h, Direction::kForward, seed);
    check_fast_against_dense<double>(n, h, Direction::kForward, seed);
    check_fast_against_dense<double>(n, h, Direction::kInverse, seed + 2);
  }
}

TEST_CASE("11008 = 344·32: hadamard_rows equals x·(H_344 ⊗ H_32)/√n in float64, keeps norms and inverts") {
  // LLaMA-2-7B's MLP width, full width (QuaRot's online Hadamard before
  // down_proj): Paley I over GF(7³) doubled five times. H_344 is Gram-checked
  // above, Sylvester's H_32 is, so H_11008·H_11008ᵀ = 344·I ⊗ 32·I = n·I; here
  // the transform is checked to be that matrix, entry function from the
  // formulas (the 11008² matrix itself would be 480 MB of int).
  constexpr Eigen::Index n = 11008;
  const HadamardConstruction c = hadamard_construction(n);
  REQUIRE(c.base == 344);
  const IndependentHadamard independent(n);
  Eigen::MatrixXi hk(c.base, c.base);
  for (Eigen::Index a = 0; a < c.base; ++a)
    for (Eigen::Index b = 0; b < c.base; ++b) hk(a, b) = independent.base(a, b);
  const Eigen::Index p = c.sylvester_size();
  const auto entry = [&](Eigen::Index i, Eigen::Index j) { return hk(i / p, j / p) * sylvester_entry(i % p, j % p); };
  MatrixX<double> x(2, n);
  x.row(0) = oq::test::gaussian<double>(1, n, 110);
  x.row(1) = oq::test::heavy_tailed<double>(1, n, 111);
  const MatrixX<double> ref = rows_times_ref(x, entry);
  MatrixX<double> y = x;
  hadamard_rows(y);
  CHECK(max_row_error(y, ref, x) <= tolerance<double>(c));
  for (Eigen::Index r = 0; r < 2; ++r) {
    CHECK(std::abs(y.row(r).norm() - x.row(r).norm()) <= tolerance<double>(c) * x.row(r).norm());
  }
  MatrixX<float> yf = x.cast<float>();
  hadamard_rows(yf);
  CHECK(max_row_error(yf, ref, x) <= tolerance<float>(c) + 1e-7);  // + x's rounding to float
  hadamard_rows(y, Direction::kInverse);
  CHECK(max_row_error(y, x, x) <= 2 * tolerance<double>(c));
}

TEST_CASE_TEMPLATE("11008: M·e_i for 64 random basis vectors are orthonormal columns, within float rounding", T, float,
                   double) {
  // The transform itself (not the matrix formulas above) on e_i: row i of
  // x = e_iᵀ is e_iᵀ·M, i.e. row i of M = H_n/√n, and M is orthogonal iff
  // its rows (equivalently columns: M⁻¹ = Mᵀ) are orthonormal. 11008 =
  // 344·32 (not 172·64: no construction of 172; block_hadamard_rows covers
  // that split). 64 distinct indices from a fixed seed, with 0 and n − 1.
  //
  // Rounding (worst case, γ_k = k·u/(1 − k·u), u the unit roundoff of T,
  // u64 = 2^−53 of the float64 sums below). e_i has one nonzero entry, 1:
  // every butterfly sum has one nonzero term (exact, ±1), and so has every
  // sum of the K-mix (the other segments are 0), so before the scale each
  // entry is exactly ±1 and after it exactly ±s, s = fl(1/√n) = (1 + δ)/√n,
  // |δ| ≤ u. Then the Gram matrix G = Y·Yᵀ, summed in float64:
  //   G_ii: n equal terms s² (s² rounded once for T = double), exact sum
  //   n·s² = (1 + δ)², so |G_ii − 1| ≤ 2u + u² + γ64_(n+1)·(1 + u)²;
  //   G_ij, i ≠ j: the exact sum is s²·(H_n row i · H_n row j) = 0, so
  //   |G_ij| ≤ γ64_(n+1)·Σ|y_i,k·y_j,k| = γ64_(n+1)·n·s², independent of u.
  // A wrong sign anywhere in H would make some |G_ij| ≥ 2s² ≈ 1.8e−4.
  //
  // The inverse on these rows: every output is a sum of n terms ±s, through
  // m butterfly stages and a K-term sum (each term passes at most m + K − 1
  // additions: error ≤ γ_(m+K−1)·n·s), then one product by s. Its exact
  // value is n·s² = (1 + δ)² at index i and 0 elsewhere, so e_i comes back
  // within 2u + u² + γ_(m+K)·(1 + u)² at i and γ_(m+K)·(1 + u)² elsewhere.
  constexpr Eigen::Index n = 11008;
  constexpr Eigen::Index kCount = 64;
  std::mt19937_64 rng(11008);
  std::vector<Eigen::Index> index{0, n - 1};
  std::set<Eigen::Index> seen(index.begin(), index.end());
  std::uniform_int_distribution<Eigen::Index> pick(1, n - 2);
  while (static_cast<Eigen::Index>(index.size()) < kCount) {
    const Eigen::Index i = pick(rng);
    if (seen.insert(i).second) index.push_back(i);
  }
  MatrixX<T> y = MatrixX<T>::Zero(kCount, n);
  for (Eigen::Index r = 0; r < kCount; ++r) y(r, index[static_cast<std::size_t>(r)]) = T(1);
  hadamard_rows(y);
  const HadamardConstruction c = hadamard_construction(n);
  const double u = std::ldexp(1.0, -std::numeric_limits<T>::digits);
  const auto gamma = [](double k, double unit) { return k * unit / (1 - k * unit); };
  const double g64 = gamma(static_cast<double>(n + 1), std::ldexp(1.0, -53));
  const double s = static_cast<double>(static_cast<T>(1.0 / std::sqrt(static_cast<double>(n))));
  CHECK((y.array().abs() == static_cast<T>(s)).all());  // ±s, nothing else
  const MatrixX<double> yd = y.template cast<double>();
  const MatrixX<double> gram = yd * yd.transpose();
  MatrixX<double> off = gram;
  off.diagonal().setZero();
  CHECK((gram.diagonal().array() - 1.0).abs().maxCoeff() <= 2 * u + u * u + g64 * (1 + u) * (1 + u));
  CHECK(off.cwiseAbs().maxCoeff() <= g64 * static_cast<double>(n) * s * s);
  hadamard_rows(y, Direction::kInverse);
  const double g = gamma(static_cast<double>(c.power + c.base), u) * (1 + u) * (1 + u);
  for (Eigen::Index r = 0; r < kCount; ++r) {
    CAPTURE(r);
    const Eigen::Index i = index[static_cast<std::size_t>(r)];
    CHECK(std::abs(static_cast<double>(y(r, i)) - 1.0) <= 2 * u + u * u + g);
    y(r, i) = T(0);
    CHECK(static_cast<double>(y.row(r).cwiseAbs().maxCoeff()) <= g);
  }
}

TEST_CASE("storage order, blocks, maps and many rows") {
  // 70 rows of 1280 = 20·64: more than one chunk of rows, the last one partial.
  const MatrixX<double> x = oq::test::heavy_tailed<double>(70, 1280, 11);
  const MatrixX<double> ref = rows_times_ref(x, hadamard_matrix(1280));
  const double tol = tolerance<double>(hadamard_construction(1280));

  MatrixX<double> col_major = x;
  hadamard_rows(col_major);
  CHECK(max_row_error(col_major, ref, x) <= tol);

  RowMatrixX<double> row_major = x;
  hadamard_rows(row_major);
  CHECK(MatrixX<double>(row_major) == col_major);

  // A block of a bigger matrix: only the block changes.
  MatrixX<double> big = MatrixX<double>::Constant(74, 1290, 5.0);
  big.block(2, 7, 70, 1280) = x;
  hadamard_rows(big.block(2, 7, 70, 1280));
  CHECK(big.block(2, 7, 70, 1280) == col_major);
  CHECK((big.topRows(2).array() == 5.0).all());
  CHECK((big.bottomRows(2).array() == 5.0).all());
  CHECK((big.leftCols(7).array() == 5.0).all());
  CHECK((big.rightCols(3).array() == 5.0).all());

  // A map over the caller's buffer, and a transposed view (rows of xᵀᵀ).
  std::vector<double> buffer(row_major.size());
  Eigen::Map<RowMatrixX<double>> mapped(buffer.data(), 70, 1280);
  mapped = x;
  hadamard_rows(mapped);
  CHECK(MatrixX<double>(mapped) == col_major);
  MatrixX<double> xt = x.transpose();
  hadamard_rows(xt.transpose());
  CHECK(MatrixX<double>(xt.transpose()) == col_major);

  // No rows: nothing to do.
  MatrixX<double> empty(0, 12);
  hadamard_rows(empty);
  CHECK(empty.size() == 0);
}

TEST_CASE_TEMPLATE("block-diagonal Hadamard equals the explicit block-diagonal matrix", T, float, double) {
  struct Case {
    Eigen::Index width, block;
  };
  // Blocks of widths with and without a construction of their own (688 =
  // 172·4: 172 has none; 100 and 688 have one over GF(7²) and GF(7³)).
  for (const Case& tc : {Case{100, 20}, Case{688, 4}, Case{168, 28}, Case{384, 12}, Case{512, 512}, Case{96, 1}}) {
    CAPTURE(tc.width);
    CAPTURE(tc.block);
    const MatrixX<double> m = block_hadamard_orthogonal<double>(tc.width, tc.block);
    // The explicit matrix: H_b/√b on the diagonal blocks, zero elsewhere.
    const MatrixX<double> hb = hadamard_orthogonal<double>(tc.block);
    // H_b itself against the formulas (IndependentHadamard), not only the
    // library's own hadamard_orthogonal.
    const IndependentHadamard independent(tc.block);
    const double scale = 1.0 / std::sqrt(static_cast<double>(tc.block));
    bool same = true;
    for (Eigen::Index i = 0; i < tc.block; ++i)
      for (Eigen::Index j = 0; j < tc.block; ++j) same = same && hb(i, j) == independent(i, j) * scale;
    CHECK(same);
    for (Eigen::Index i = 0; i < tc.width / tc.block; ++i) {
      for (Eigen::Index j = 0; j < tc.width / tc.block; ++j) {
        const auto blk = m.block(i * tc.block, j * tc.block, tc.block, tc.block);
        if (i == j) {
          CHECK(blk == hb);
        } else {
          CHECK(blk.isZero(0));
        }
      }
    }
    CHECK(block_hadamard_orthogonal<float>(tc.width, tc.block) == m.cast<float>());

    const MatrixX<T> x = oq::test::gaussian<T>(5, tc.width, 21);
    const MatrixX<double> xd = x.template cast<double>();
    // Plain loops over the explicit matrix (Gram-checked blocks scaled by 1/√b).
    MatrixX<double> ref(x.rows(), tc.width);
    for (Eigen::Index r = 0; r < x.rows(); ++r) {
      for (Eigen::Index j = 0; j < tc.width; ++j) {
        double sum = 0.0;
        for (Eigen::Index i = 0; i < tc.width; ++i) sum += xd(r, i) * m(i, j);
        ref(r, j) = sum;
      }
    }
    MatrixX<T> y = x;
    block_hadamard_rows(y, tc.block);
    // The reference sums `width` terms (zeros add no rounding, but they are
    // still counted): its share of the tolerance uses width, not block.
    HadamardConstruction bound = hadamard_construction(tc.block);
    bound.size = tc.width;
    CHECK(max_row_error(y, ref, xd) <= tolerance<T>(bound));
    block_hadamard_rows(y, tc.block, Direction::kInverse);
    CHECK(max_row_error(y, xd, xd) <= 2 * tolerance<T>(bound));
  }
}

TEST_CASE("X·Wᵀ is preserved when X and W get the same rotation") {
  struct Case {
    Eigen::Index width, block;  // block 0: hadamard_rows over the whole width
  };
  for (const Case& tc : {Case{768, 0}, Case{2816, 0}, Case{5120, 0}, Case{11008, 0}, Case{11008, 64}, Case{11008, 256}}) {
    CAPTURE(tc.width);
    CAPTURE(tc.block);
    const MatrixX<double> x = oq::test::heavy_tailed<double>(8, tc.width, 31);
    const MatrixX<double> w = oq::test::gaussian<double>(6, tc.width, 32);
    MatrixX<double> xr = x;
    MatrixX<double> wr = w;
    if (tc.block == 0) {
      hadamard_rows(xr);
      hadamard_rows(wr);
    } else {
      block_hadamard_rows(xr, tc.block);
      block_hadamard_rows(wr, tc.block);
    }
    CHECK((xr - x).norm() > 0.1 * x.norm());  // it did rotate
    const MatrixX<double> y = x * w.transpose();
    const MatrixX<double> yr = xr * wr.transpose();
    // Normwise relative to ‖X‖·‖W‖, the scale of the dot products' rounding
    // (‖X·Wᵀ‖ itself is smaller by about √width for independent rows).
    CHECK((yr - y).norm() <= 1e-12 * x.norm() * w.norm());
  }
  // 11008 = 172·64, each 64-wide block rotated on its own.
  const MatrixX<double> x = oq::test::gaussian<double>(3, 11008, 41);
  MatrixX<double> y = x;
  block_hadamard_rows(y, 64);
  const MatrixX<double> h64 = hadamard_orthogonal<double>(64);
  for (Eigen::Index s = 0; s < 11008; s += 64) {
    const MatrixX<double> expected = x.middleCols(s, 64) * h64;
    CHECK((y.middleCols(s, 64) - expected).norm() <= 1e-12 * x.middleCols(s, 64).norm());
  }
}

TEST_CASE("bad input gives clear errors") {
  // The checked entry point other headers use (RandomizedHadamard,
  // cpu::TokenTransform::full_hadamard): the caller's function and
  // parameter in the message, the same construction as the plain call.
  CHECK_THROWS_WITH_AS(hadamard_construction(172, "my::rotate", "width"),
                       doctest::Contains("my::rotate: width must be a size with a Hadamard construction (K * 2^m"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(hadamard_construction(172, "my::rotate", "width"),
                       doctest::Contains("got 172: no construction exists for 172"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(hadamard_construction(0, "my::rotate", "width"),
                       doctest::Contains("my::rotate: width must be positive, got 0"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(hadamard_construction(-4), doctest::Contains("oq::transform::hadamard_construction: n must be positive"),
                       std::invalid_argument);
  for (Eigen::Index n : {1, 12, 11008}) {
    const HadamardConstruction a = hadamard_construction(n, "my::rotate", "width");
    const HadamardConstruction b = hadamard_construction(n);
    CHECK(a.size == b.size);
    CHECK(a.base == b.base);
    CHECK(a.power == b.power);
    CHECK(a.kind == b.kind);
    CHECK(a.prime == b.prime);
    CHECK(a.degree == b.degree);
  }
  CHECK_FALSE(find_hadamard_construction(172).has_value());
  CHECK_FALSE(find_hadamard_construction(3).has_value());
  CHECK_FALSE(find_hadamard_construction(6).has_value());
  CHECK_THROWS_WITH_AS(hadamard_matrix(172),
                       doctest::Contains("oq::transform::hadamard_matrix: n must be a size with a Hadamard "
                                         "construction"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(hadamard_matrix(172), doctest::Contains("got 172: no construction exists for 172"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(hadamard_construction(92), doctest::Contains("got 92"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(hadamard_orthogonal<double>(116), doctest::Contains("n must be a size with"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(hadamard_matrix(0), doctest::Contains("n must be positive, got 0"), std::invalid_argument);
  Eigen::MatrixXi wrong_shape(12, 11);
  CHECK_THROWS_WITH_AS(hadamard_matrix_into(12, wrong_shape),
                       doctest::Contains("oq::transform::hadamard_matrix_into: out must be 12 x 12, got 12 x 11"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(hadamard_matrix_into(172, Eigen::MatrixXi(172, 172)), doctest::Contains("got 172"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(find_hadamard_construction(-4), doctest::Contains("n must be positive, got -4"),
                       std::invalid_argument);

  MatrixX<double> x = oq::test::gaussian<double>(3, 172, 1);
  CHECK_THROWS_WITH_AS(hadamard_rows(x),
                       doctest::Contains("oq::transform::hadamard_rows: x.cols() must be a size with a Hadamard"),
                       std::invalid_argument);
  MatrixX<double> no_cols(3, 0);
  CHECK_THROWS_WITH_AS(hadamard_rows(no_cols), doctest::Contains("x.cols() must be positive, got 0"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(block_hadamard_rows(no_cols, 4), doctest::Contains("x.cols() must be positive, got 0"),
                       std::invalid_argument);

  MatrixX<float> w = oq::test::gaussian<float>(2, 100, 2);
  CHECK_THROWS_WITH_AS(block_hadamard_rows(w, 12),
                       doctest::Contains("oq::transform::block_hadamard_rows: block_size must divide x.cols() = "
                                         "100, got 12"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(block_hadamard_rows(w, 50), doctest::Contains("block_size must be a size with a Hadamard"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(block_hadamard_rows(w, 0), doctest::Contains("block_size must be positive, got 0"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(block_hadamard_orthogonal<float>(100, 8),
                       doctest::Contains("block_size must divide width = 100, got 8"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(block_hadamard_orthogonal<float>(0, 8), doctest::Contains("width must be positive, got 0"),
                       std::invalid_argument);

  MatrixX<float> twelve = oq::test::gaussian<float>(2, 12, 3);
  CHECK_THROWS_WITH_AS(fwht_rows(twelve),
                       doctest::Contains("oq::transform::fwht_rows: x.cols() must be a power of two"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(fwht_rows(twelve), doctest::Contains("got 12"), std::invalid_argument);

  // NaN/Inf: named, and x is left untouched.
  MatrixX<double> bad = oq::test::gaussian<double>(3, 64, 4);
  bad(1, 3) = std::numeric_limits<double>::quiet_NaN();
  const MatrixX<double> before = bad;
  CHECK_THROWS_WITH_AS(hadamard_rows(bad), doctest::Contains("x(1, 3) is nan"), std::domain_error);
  CHECK_THROWS_WITH_AS(fwht_rows(bad), doctest::Contains("x(1, 3) is nan"), std::domain_error);
  CHECK_THROWS_WITH_AS(block_hadamard_rows(bad, 16), doctest::Contains("x(1, 3) is nan"), std::domain_error);
  bad(2, 60) = std::numeric_limits<double>::infinity();
  CHECK_THROWS_WITH_AS(hadamard_rows(bad.bottomRows(1)), doctest::Contains("x(0, 60) is inf"), std::domain_error);
  bad(2, 60) = before(2, 60);
  CHECK(bad.cwiseEqual(before).count() + 1 == bad.size());  // only the NaN differs (NaN != NaN)
}

TEST_CASE("a huge size is refused by the cheap checks, before the construction search") {
  // 4·P with 4P − 1 a prime (≡ 3 mod 4, so Paley I applies): the search's
  // trial division runs to √(4.6e18) ≈ 2.1e9 before it finds the
  // construction. Before: seconds of it, then "must divide" (issue 23).
  // Read through a volatile: a constant would let GCC propagate it into the
  // fill loops after the checks and warn about their iteration count.
  volatile Eigen::Index huge_value = 4611686018427388092;
  const Eigen::Index kHuge = huge_value;
  MatrixX<float> x = oq::test::gaussian<float>(2, 8, 5);
  CHECK(oq::test::finishes_within(std::chrono::seconds(2), [&] {
    try {
      block_hadamard_rows(x, kHuge);
    } catch (const std::invalid_argument& e) {
      return std::string(e.what()).find("block_size must divide x.cols() = 8, got 4611686018427388092") !=
             std::string::npos;
    }
    return false;
  }));
  CHECK(oq::test::finishes_within(std::chrono::seconds(2), [&] {
    try {
      (void)block_hadamard_orthogonal<float>(8, kHuge);
    } catch (const std::invalid_argument& e) {
      return std::string(e.what()).find("block_size must divide width = 8") != std::string::npos;
    }
    return false;
  }));
  for (int which = 0; which < 2; ++which) {
    CHECK(oq::test::finishes_within(std::chrono::seconds(2), [&] {
      try {
        if (which == 0) {
          (void)hadamard_orthogonal<double>(kHuge);
        } else {
          (void)hadamard_matrix(kHuge);
        }
      } catch (const std::invalid_argument& e) {
        return std::string(e.what()).find("n = 4611686018427388092 is too large: an n x n matrix") !=
               std::string::npos;
      }
      return false;
    }));
  }
  CHECK(oq::test::finishes_within(std::chrono::seconds(2), [&] {
    Eigen::MatrixXi small(8, 8);
    try {
      hadamard_matrix_into(kHuge, small);
    } catch (const std::invalid_argument& e) {
      return std::string(e.what()).find("out must be 4611686018427388092 x 4611686018427388092, got 8 x 8") !=
             std::string::npos;
    }
    return false;
  }));
}

TEST_CASE_TEMPLATE("entries near the largest value: a finite result or std::domain_error, never inf", T, float, double) {
  // Issue 23: the unnormalised sums (up to n·max|x|) overflowed to inf before
  // the 1/√n, for finite outputs as large as max/√n·… . Now: rows whose sums
  // could overflow are transformed scaled by a power of two.
  const T big = std::numeric_limits<T>::max() / T(4);
  for (const Eigen::Index n : {Eigen::Index(64), Eigen::Index(12), Eigen::Index(48)}) {
    CAPTURE(n);
    // One large entry per row: |y_j| = big/√n, far below the largest value.
    MatrixX<T> x = MatrixX<T>::Zero(4, n);
    x(0, 0) = big;
    x(1, n - 1) = -big;
    x(2, 1) = big;
    x(2, 2) = big;  // two: the sum 2·big stays finite, |y| ≤ 2·big/√n
    // Four entries of max/3: the unnormalised sums reach 4·max/3 (inf before
    // the fix), the outputs at most 4·max/(3√n), finite.
    x.row(3).head(4).setConstant(std::numeric_limits<T>::max() / T(3));
    const MatrixX<double> xd = x.template cast<double>();
    MatrixX<T> y = x;
    hadamard_rows(y);
    CHECK(y.allFinite());
    const MatrixX<double> ref = rows_times_ref(xd, IndependentHadamard(n));
    CHECK(max_row_error(y, ref, xd) <= tolerance<T>(hadamard_construction(n)));
    hadamard_rows(y, Direction::kInverse);
    CHECK(max_row_error(y, xd, xd) <= 2 * tolerance<T>(hadamard_construction(n)));
    // A row of n equal entries of half the largest value: its first output
    // is √n/2 (Sylvester) or (K − 2)/(2√n)·… (Paley) times the largest
    // value, beyond it. Refused, naming the entry, x unchanged.
    const T half = std::numeric_limits<T>::max() / T(2);
    MatrixX<T> full = MatrixX<T>::Constant(2, n, half);
    full.row(0).setZero();
    const MatrixX<T> before = full;
    CHECK_THROWS_WITH_AS(hadamard_rows(full), doctest::Contains("the rotated x(1, 0) exceeds the largest finite"),
                         std::domain_error);
    CHECK(full == before);
  }
  // fwht_rows and the block-diagonal transform, the same way.
  MatrixX<T> x = MatrixX<T>::Zero(2, 16);
  x(0, 3) = big;
  x(1, 9) = -big;
  MatrixX<T> f = x;
  fwht_rows(f);
  CHECK(f.allFinite());
  CHECK(std::abs(static_cast<double>(f(0, 0)) - static_cast<double>(big) / 4.0) <= 1e-6 * static_cast<double>(big));
  MatrixX<T> blocks = x;
  block_hadamard_rows(blocks, 8);
  CHECK(blocks.allFinite());
  MatrixX<T> wide = MatrixX<T>::Constant(1, 16, std::numeric_limits<T>::max() / T(2));
  const MatrixX<T> wide_before = wide;
  CHECK_THROWS_WITH_AS(block_hadamard_rows(wide, 8), doctest::Contains("exceeds the largest finite"),
                       std::domain_error);
  CHECK(wide == wide_before);
  CHECK_THROWS_AS(fwht_rows(wide), std::domain_error);
  CHECK(wide == wide_before);
}
