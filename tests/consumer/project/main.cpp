// A consumer of oq: quantizes a small matrix and checks the half-step bound.
#include <oq/oq.hpp>

#include <cmath>
#include <cstdio>

static_assert(OQ_VERSION_MAJOR == EXPECTED_MAJOR && OQ_VERSION_MINOR == EXPECTED_MINOR,
              "headers and package version disagree");

int main() {
  Eigen::MatrixXf x(4, 16);
  for (int r = 0; r < 4; ++r)
    for (int c = 0; c < 16; ++c) x(r, c) = std::sin(0.37f * static_cast<float>(r * 16 + c));
  const auto spec = oq::quant::QuantSpec::per_token(4, true);
  const auto params = oq::quant::compute_params(x, spec);
  const Eigen::MatrixXf y = oq::quant::fake_quantize(x, params, spec);
  for (int r = 0; r < 4; ++r) {
    const float bound = params.scale(r, 0) * 0.5f * 1.0001f;
    if (((y - x).row(r).cwiseAbs().array() > bound).any()) {
      std::printf("error above s/2 in row %d\n", r);
      return 1;
    }
  }
  std::printf("oq %d.%d.%d consumer OK\n", OQ_VERSION_MAJOR, OQ_VERSION_MINOR, OQ_VERSION_PATCH);
  return 0;
}
