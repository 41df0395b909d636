// oq/duquant.hpp, the module header: oq::duquant names what it includes.
#include <oq/duquant.hpp>

#include <doctest/doctest.h>

#include "support/matrices.hpp"

#include <random>
#include <sstream>
#include <type_traits>
#include <vector>

namespace {

// oq::duquant is oq::transform under the module's name: the same entities,
// not copies (a type is the same type, a function template the same function).
static_assert(std::is_same_v<oq::duquant::DuQuantOptions, oq::transform::DuQuantOptions>);
static_assert(std::is_same_v<oq::duquant::DuQuantTransform<float>, oq::transform::DuQuantTransform<float>>);
static_assert(std::is_same_v<oq::duquant::Permutation, oq::transform::Permutation>);
// Addresses compared through a function, which GCC does not flag as a
// self-comparison (-Wtautological-compare): that they are one is the point.
template <class T>
constexpr bool same_entity(T* a, T* b) {
  return a == b;
}
static_assert(same_entity(&oq::duquant::kMaxPermutationRounds, &oq::transform::kMaxPermutationRounds));
using Column = Eigen::Matrix<double, Eigen::Dynamic, 1>;
static_assert(same_entity(&oq::duquant::zigzag_permutation<Column>, &oq::transform::zigzag_permutation<Column>));
static_assert(same_entity(&oq::duquant::save_duquant<double>, &oq::transform::save_duquant<double>));
static_assert(same_entity(&oq::duquant::load_duquant<float>, &oq::transform::load_duquant<float>));

}  // namespace

TEST_CASE("the module header's calibrate / fold / apply / save sequence, spelled with oq::duquant only") {
  using namespace oq::duquant;
  const Eigen::MatrixXd x = oq::test::gaussian<double>(32, 32, 7);
  const Eigen::MatrixXd w = oq::test::gaussian<double>(8, 32, 8);
  DuQuantOptions options;
  options.block_size = 8;
  options.greedy_steps = 4;
  std::mt19937_64 rng(3);
  const auto t = calibrate_duquant(x, options, rng);
  // The transform keeps the layer's output: apply(X)·fold(W)ᵀ = X·Wᵀ.
  const Eigen::MatrixXd y = x * w.transpose();
  const Eigen::MatrixXd y_rotated = t.apply(x) * t.fold_into_weight(w).transpose();
  CHECK((y_rotated - y).cwiseAbs().maxCoeff() < 1e-12 * x.norm() * w.norm());
  std::stringstream file(std::ios::in | std::ios::out | std::ios::binary);
  save_duquant(file, t);
  const auto back = load_duquant<double>(file);
  CHECK(back.matrix() == t.matrix());
}
