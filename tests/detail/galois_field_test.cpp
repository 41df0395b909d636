#include <oq/detail/galois_field.hpp>

#include <doctest/doctest.h>

#include <cstdint>
#include <map>
#include <random>
#include <set>
#include <stdexcept>
#include <vector>

using oq::detail::GaloisField;
using oq::detail::prime_power;

namespace {

// Polynomials over GF(p) as coefficient vectors (index = power), written
// here apart from the library's shift-and-reduce walk and its log tables.
using Poly = std::vector<Eigen::Index>;

Poly digits_of(Eigen::Index a, Eigen::Index p, int k) {
  Poly c(static_cast<std::size_t>(k));
  for (int i = 0; i < k; ++i) {
    c[static_cast<std::size_t>(i)] = a % p;
    a /= p;
  }
  return c;
}

Eigen::Index number_of(const Poly& c, Eigen::Index p) {
  Eigen::Index a = 0;
  for (auto it = c.rbegin(); it != c.rend(); ++it) a = a * p + *it;
  return a;
}

// r mod f for monic f (f's leading coefficient 1 included), by long division.
Poly reduce(Poly r, const Poly& f, Eigen::Index p) {
  const std::size_t k = f.size() - 1;
  while (r.size() > k) {
    const Eigen::Index t = r.back() % p;
    const std::size_t shift = r.size() - 1 - k;
    for (std::size_t i = 0; i <= k; ++i) r[shift + i] = ((r[shift + i] - t * f[i]) % p + p) % p;
    r.pop_back();
  }
  r.resize(k, 0);
  return r;
}

// The monic modulus x^k + Σ a_i·x^i with the library's a_i.
Poly monic_modulus(const GaloisField& field) {
  Poly f = field.modulus();
  f.push_back(1);
  return f;
}

// a·b in GF(p)[x]/(f) by the schoolbook product and long division.
Eigen::Index schoolbook_mul(Eigen::Index a, Eigen::Index b, const Poly& f, Eigen::Index p) {
  const int k = static_cast<int>(f.size()) - 1;
  const Poly x = digits_of(a, p, k), y = digits_of(b, p, k);
  Poly r(2 * static_cast<std::size_t>(k) - 1, 0);
  for (int i = 0; i < k; ++i)
    for (int j = 0; j < k; ++j) {
      auto& v = r[static_cast<std::size_t>(i + j)];
      v = (v + x[static_cast<std::size_t>(i)] * y[static_cast<std::size_t>(j)]) % p;
    }
  return number_of(reduce(r, f, p), p);
}

// a^e by repeated squaring over schoolbook_mul.
Eigen::Index schoolbook_pow(Eigen::Index a, Eigen::Index e, const Poly& f, Eigen::Index p) {
  Eigen::Index result = 1;
  for (; e > 0; e /= 2) {
    if (e % 2 == 1) result = schoolbook_mul(result, a, f, p);
    a = schoolbook_mul(a, a, f, p);
  }
  return result;
}

// Whether monic f of degree k has a monic factor of degree 1 … k/2: every
// monic polynomial g of that degree tried by long division (the test's
// fields are small).
bool irreducible_by_division(const Poly& f, Eigen::Index p) {
  const int k = static_cast<int>(f.size()) - 1;
  for (int d = 1; d <= k / 2; ++d) {
    Eigen::Index count = 1;
    for (int i = 0; i < d; ++i) count *= p;
    for (Eigen::Index code = 0; code < count; ++code) {
      Poly g = digits_of(code, p, d);
      g.push_back(1);
      const Poly r = reduce(f, g, p);  // f mod g, g monic of degree d
      bool zero = true;
      for (Eigen::Index v : r) zero = zero && v == 0;
      if (zero) return false;
    }
  }
  return true;
}

struct Field {
  Eigen::Index p;
  int k;
};

// Odd-characteristic fields of both residues of q mod 4, prime and not, and
// the sizes Paley needs (25, 49: 52 and 100; 243, 343: 244 and 344).
const std::vector<Field> kFields{{3, 1}, {5, 1}, {13, 1}, {3, 2}, {3, 3}, {5, 2}, {7, 2},
                                 {3, 4}, {5, 3}, {3, 5}, {7, 3}, {13, 2}, {2, 1}, {2, 4}};

}  // namespace

TEST_CASE("prime_power agrees with a sieve's factorisation up to 20000") {
  constexpr Eigen::Index kLimit = 20000;
  std::vector<Eigen::Index> smallest(kLimit + 1, 0);  // smallest prime factor
  for (Eigen::Index i = 2; i <= kLimit; ++i) {
    if (smallest[static_cast<std::size_t>(i)] != 0) continue;
    for (Eigen::Index j = i; j <= kLimit; j += i) {
      if (smallest[static_cast<std::size_t>(j)] == 0) smallest[static_cast<std::size_t>(j)] = i;
    }
  }
  for (Eigen::Index q = 0; q <= kLimit; ++q) {
    CAPTURE(q);
    const auto f = prime_power(q);
    if (q < 2) {
      CHECK_FALSE(f.has_value());
      continue;
    }
    // Distinct prime factors by the sieve.
    std::set<Eigen::Index> factors;
    int multiplicity = 0;
    for (Eigen::Index r = q; r > 1; r /= smallest[static_cast<std::size_t>(r)]) {
      factors.insert(smallest[static_cast<std::size_t>(r)]);
      ++multiplicity;
    }
    REQUIRE(f.has_value() == (factors.size() == 1));
    if (f) {
      CHECK(f->prime == *factors.begin());
      CHECK(f->degree == multiplicity);
    }
  }
  // Large ones: the prime 2^31 − 1, the cube of a prime, a product of two primes.
  CHECK(prime_power(2147483647)->degree == 1);
  CHECK(prime_power(Eigen::Index{65521} * 65521 * 65521)->prime == 65521);
  CHECK(prime_power(Eigen::Index{65521} * 65521 * 65521)->degree == 3);
  CHECK_FALSE(prime_power(Eigen::Index{65537} * 65539).has_value());
}

TEST_CASE("GF(p^k): the modulus is irreducible, x generates the group, products match the schoolbook ones") {
  std::mt19937_64 rng(3);
  for (const Field& fld : kFields) {
    CAPTURE(fld.p);
    CAPTURE(fld.k);
    const GaloisField field(fld.p, fld.k);
    Eigen::Index q = 1;
    for (int i = 0; i < fld.k; ++i) q *= fld.p;
    REQUIRE(field.order() == q);
    CHECK(field.characteristic() == fld.p);
    CHECK(field.degree() == fld.k);
    const Poly f = monic_modulus(field);
    REQUIRE(f.size() == static_cast<std::size_t>(fld.k) + 1);
    for (Eigen::Index a : field.modulus()) CHECK((a >= 0 && a < fld.p));
    CHECK(field.modulus()[0] != 0);
    CHECK(irreducible_by_division(f, fld.p));
    // The first such modulus in the documented order: no smaller code gives
    // a primitive x (order of x by the schoolbook product).
    const Eigen::Index own_code = number_of(field.modulus(), fld.p);
    for (Eigen::Index code = 1; code < own_code; ++code) {
      if (code % fld.p == 0) continue;
      Poly g = digits_of(code, fld.p, fld.k);
      g.push_back(1);
      // x mod g: the element p (digit 1 at x^1), or −a_0 when k = 1.
      const Eigen::Index generator = fld.k == 1 ? (fld.p - g[0]) % fld.p : fld.p;
      Eigen::Index order = 1;
      for (Eigen::Index c = generator; c != 1 && order < q; c = schoolbook_mul(c, generator, g, fld.p)) ++order;
      CHECK(order != q - 1);
    }
    // x^e: every nonzero element exactly once, log the inverse map.
    std::set<Eigen::Index> seen;
    for (Eigen::Index e = 0; e < q - 1; ++e) {
      const Eigen::Index v = field.power_of_generator(e);
      CHECK((v > 0 && v < q));
      seen.insert(v);
      CHECK(field.log(v) == e);
    }
    CHECK(static_cast<Eigen::Index>(seen.size()) == q - 1);
    // mul, add, sub against the schoolbook arithmetic: every pair for small
    // q, 20000 random pairs otherwise.
    const auto check_pair = [&](Eigen::Index a, Eigen::Index b) {
      bool ok = field.mul(a, b) == schoolbook_mul(a, b, f, fld.p);
      const Poly x = digits_of(a, fld.p, fld.k), y = digits_of(b, fld.p, fld.k);
      Poly sum(x.size()), difference(x.size());
      for (std::size_t i = 0; i < x.size(); ++i) {
        sum[i] = (x[i] + y[i]) % fld.p;
        difference[i] = (x[i] - y[i] + fld.p) % fld.p;
      }
      ok = ok && field.add(a, b) == number_of(sum, fld.p) && field.sub(a, b) == number_of(difference, fld.p);
      return ok;
    };
    bool all_ok = true;
    if (q <= 169) {
      for (Eigen::Index a = 0; a < q; ++a)
        for (Eigen::Index b = 0; b < q; ++b) all_ok = all_ok && check_pair(a, b);
    } else {
      std::uniform_int_distribution<Eigen::Index> pick(0, q - 1);
      for (int t = 0; t < 20000; ++t) all_ok = all_ok && check_pair(pick(rng), pick(rng));
    }
    CHECK(all_ok);
  }
}

TEST_CASE("χ is the quadratic character: Euler's criterion, half the group, multiplicative, χ(−1) by q mod 4") {
  for (const Field& fld : kFields) {
    if (fld.p == 2) continue;
    CAPTURE(fld.p);
    CAPTURE(fld.k);
    const GaloisField field(fld.p, fld.k);
    const Eigen::Index q = field.order();
    const Poly f = monic_modulus(field);
    const Eigen::Index minus_one = fld.p - 1;  // the element −1: digit 0 is p − 1
    CHECK(field.chi(0) == 0);
    Eigen::Index squares = 0;
    bool euler = true, by_squaring = true;
    std::set<Eigen::Index> square_set;
    for (Eigen::Index a = 1; a < q; ++a) square_set.insert(schoolbook_mul(a, a, f, fld.p));
    for (Eigen::Index a = 1; a < q; ++a) {
      const int chi = field.chi(a);
      squares += chi == 1;
      // Euler: a^((q−1)/2) = ±1 in GF(q), +1 exactly for the squares.
      const Eigen::Index e = schoolbook_pow(a, (q - 1) / 2, f, fld.p);
      euler = euler && ((chi == 1 && e == 1) || (chi == -1 && e == minus_one));
      by_squaring = by_squaring && (chi == 1) == square_set.contains(a);
    }
    CHECK(euler);
    CHECK(by_squaring);
    CHECK(squares == (q - 1) / 2);
    CHECK(field.chi(minus_one) == (q % 4 == 1 ? 1 : -1));
    bool multiplicative = true;
    for (Eigen::Index a = 1; a < std::min<Eigen::Index>(q, 60); ++a)
      for (Eigen::Index b = 1; b < std::min<Eigen::Index>(q, 60); ++b)
        multiplicative = multiplicative && field.chi(field.mul(a, b)) == field.chi(a) * field.chi(b);
    CHECK(multiplicative);
  }
}

TEST_CASE("GaloisField: bad input gives clear errors") {
  CHECK_THROWS_WITH_AS(GaloisField(4, 1), doctest::Contains("oq::detail::GaloisField: p must be a prime, got 4"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(GaloisField(1, 1), doctest::Contains("p must be a prime, got 1"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(GaloisField(3, 0), doctest::Contains("k must be >= 1, got 0"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(GaloisField(2, 31), doctest::Contains("q = 2^31 must be below 2^31"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(GaloisField(2147483647, 2), doctest::Contains("must be below 2^31"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(GaloisField(2, 3).chi(1), doctest::Contains("the quadratic character needs an odd q, got q = 8"),
                       std::invalid_argument);
}
