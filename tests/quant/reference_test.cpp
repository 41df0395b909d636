// The reference itself, against values worked out by hand from docs/design.md §2.
#include <oq/quant/reference.hpp>

#include <doctest/doctest.h>

using namespace oq::quant;
using Matrix = Eigen::MatrixXd;

TEST_CASE("asymmetric 2-bit by hand, including a tie rounded to even") {
  Matrix x(1, 4);
  x << -1.0, 0.0, 0.5, 2.0;
  const QuantSpec spec = QuantSpec::per_token(2, false);
  const auto p = compute_params_ref(x, spec);
  CHECK(p.scale(0, 0) == 1.0);  // (2 − (−1)) / 3
  CHECK(p.zero(0, 0) == 1.0);   // rne(1 / 1)
  Matrix codes(1, 4);
  codes << 0, 1, 1, 3;  // rne(0.5) = 0, + z = 1
  CHECK(quantize_ref(x, p, spec) == codes);
  Matrix expected(1, 4);
  expected << -1.0, 0.0, 0.0, 2.0;
  CHECK(fake_quantize_ref(x, p, spec) == expected);
}

TEST_CASE("symmetric 4-bit by hand: ties to even, both directions") {
  Matrix x(1, 5);
  x << 7.0, -3.5, 0.5, 2.5, -1.5;
  const QuantSpec spec = QuantSpec::per_tensor(4, true);
  const auto p = compute_params_ref(x, spec);
  CHECK(p.scale(0, 0) == 1.0);  // 7 / 7
  CHECK(p.zero(0, 0) == 0.0);
  Matrix codes(1, 5);
  codes << 7, -4, 0, 2, -2;
  CHECK(quantize_ref(x, p, spec) == codes);
}

TEST_CASE("clip ratio and clamping by hand") {
  Matrix x(1, 3);
  x << -8.0, 4.0, 8.0;
  const QuantSpec spec = QuantSpec::per_token(4, true, 0.875);  // c·max = 7 → s = 1
  const auto p = compute_params_ref(x, spec);
  CHECK(p.scale(0, 0) == 1.0);
  Matrix codes(1, 3);
  codes << -8, 4, 7;  // −8 fits the symmetric range's extra negative code; 8 clamps to 7
  CHECK(quantize_ref(x, p, spec) == codes);
}

TEST_CASE("per-group by hand: each group has its own parameters") {
  Matrix x(2, 4);
  x << 0.0, 3.0, -6.0, 9.0,  //
      1.0, 1.0, 0.0, 0.0;
  const QuantSpec spec = QuantSpec::per_group(2, false, 2);
  const auto p = compute_params_ref(x, spec);
  REQUIRE(p.scale.rows() == 2);
  REQUIRE(p.scale.cols() == 2);
  CHECK(p.scale(0, 0) == 1.0);  // (3 − 0) / 3
  CHECK(p.zero(0, 0) == 0.0);
  CHECK(p.scale(0, 1) == 5.0);  // (9 − (−6)) / 3
  CHECK(p.zero(0, 1) == 1.0);   // rne(6 / 5)
  CHECK(p.scale(1, 0) == 1.0);  // constant 1: s = |v|
  CHECK(p.zero(1, 0) == -1.0);  // −sign(v)
  CHECK(p.scale(1, 1) == 1.0);  // all zero
  CHECK(p.zero(1, 1) == 0.0);
  const Matrix y = fake_quantize_ref(x, p, spec);
  CHECK(y(1, 0) == 1.0);
  CHECK(y(1, 1) == 1.0);
  CHECK(y(1, 2) == 0.0);
  CHECK(y(0, 2) == -5.0);  // rne(−1.2) + 1 = 0 → (0 − 1)·5
}
