#include <oq/analysis/report.hpp>

#include <doctest/doctest.h>

#include "support/matrices.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

using namespace oq::analysis;
using oq::test::MatrixX;

TEST_CASE("a before/after report prints a summary and writes one CSV row per channel") {
  MatrixX<double> x = oq::test::gaussian<double>(128, 32, 1);
  x.col(3) *= 50.0;
  x(0, 3) = 5000.0;
  const MatrixX<double> after = x / 10.0;
  const LayerReport report = LayerReport::compare("layers.0.mlp.down_proj", x, after);

  std::ostringstream table;
  report.print(table);
  const std::string text = table.str();
  CHECK(text.find("layers.0.mlp.down_proj: 128 tokens x 32 channels") != std::string::npos);
  CHECK(text.find("before") != std::string::npos);
  CHECK(text.find("after") != std::string::npos);
  CHECK(text.find(" 3 (") != std::string::npos);  // the outlier channel is listed
  CHECK(report.massive_before.size() == 1);
  CHECK(report.massive_after.size() == 1);  // 500 is still > 100 and ≥ 1000 × the (scaled) median

  std::ostringstream written;
  report.write_csv(written);
  std::istringstream csv(written.str());
  std::string line;
  std::getline(csv, line);
  CHECK(line == "channel,absmax_before,mean_abs_before,kurtosis_before,absmax_after,mean_abs_after,kurtosis_after");
  int rows = 0;
  while (std::getline(csv, line)) {
    std::istringstream fields(line);
    std::string channel, absmax_before, rest;
    std::getline(fields, channel, ',');
    std::getline(fields, absmax_before, ',');
    const Eigen::Index c = std::stol(channel);
    CHECK(c == rows);
    CHECK(std::stod(absmax_before) == doctest::Approx(x.col(c).cwiseAbs().maxCoeff()).epsilon(1e-8));
    ++rows;
  }
  CHECK(rows == 32);
}

TEST_CASE("a single-matrix report has no after columns; shapes must agree") {
  const MatrixX<float> x = oq::test::gaussian<float>(16, 8, 2);
  std::ostringstream out;
  LayerReport::of("q_proj input", x).write_csv(out);
  CHECK(out.str().rfind("channel,absmax_before,mean_abs_before,kurtosis_before\n", 0) == 0);
  CHECK_THROWS_WITH_AS(LayerReport::compare("x", x, MatrixX<float>(16, 9)), doctest::Contains("after must be 16 x 8"),
                       std::invalid_argument);
}

TEST_CASE("an empty report is an error, not a read of an empty vector") {
  // A default-constructed report has no channels and no tokens: its largest
  // |x| and kurtosis do not exist.
  std::ostringstream out;
  const LayerReport empty;
  CHECK_THROWS_WITH_AS(empty.print(out), doctest::Contains("oq::analysis::LayerReport::print: before must hold"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(empty.write_csv(out), doctest::Contains("oq::analysis::LayerReport::write_csv"),
                       std::invalid_argument);
  // Tokens of zero channels (a tokens x 0 input) are just as empty.
  LayerReport no_channels;
  no_channels.before = ChannelMoments(0);
  no_channels.before.update(MatrixX<double>(5, 0));
  CHECK_THROWS_WITH_AS(no_channels.print(out), doctest::Contains("got 5 tokens x 0 channels"), std::invalid_argument);
  // An `after` of another channel count would be read past its end.
  LayerReport mismatched = LayerReport::of("x", oq::test::gaussian<double>(4, 3, 5));
  mismatched.after = ChannelMoments(2);
  mismatched.after->update(oq::test::gaussian<double>(4, 2, 6));
  CHECK_THROWS_WITH_AS(mismatched.write_csv(out), doctest::Contains("after must have 3 channels"),
                       std::invalid_argument);
  CHECK_THROWS_AS(mismatched.print(out), std::invalid_argument);
}

TEST_CASE("every CSV column holds its value: max |x|, mean |x| and kurtosis m4/m2², before and after") {
  // Issue 23: only the channel index and absmax_before were checked, so a
  // swapped or wrong column passed. Reference values in plain loops.
  MatrixX<double> x = oq::test::gaussian<double>(64, 6, 2);
  x.col(1) *= 20.0;
  x(3, 4) = 300.0;
  const MatrixX<double> after = 0.5 * x + MatrixX<double>::Constant(64, 6, 0.25);
  std::ostringstream written;
  LayerReport::compare("l", x, after).write_csv(written);
  std::istringstream csv(written.str());
  std::string line;
  std::getline(csv, line);
  REQUIRE(line == "channel,absmax_before,mean_abs_before,kurtosis_before,absmax_after,mean_abs_after,kurtosis_after");
  auto reference = [](const MatrixX<double>& m, Eigen::Index c) {
    const Eigen::Index n = m.rows();
    double absmax = 0, mean_abs = 0, mean = 0;
    for (Eigen::Index t = 0; t < n; ++t) {
      absmax = std::max(absmax, std::fabs(m(t, c)));
      mean_abs += std::fabs(m(t, c));
      mean += m(t, c);
    }
    mean /= static_cast<double>(n);
    double m2 = 0, m4 = 0;
    for (Eigen::Index t = 0; t < n; ++t) {
      const double d = m(t, c) - mean;
      m2 += d * d;
      m4 += d * d * d * d;
    }
    m2 /= static_cast<double>(n);
    m4 /= static_cast<double>(n);
    return std::array<double, 3>{absmax, mean_abs / static_cast<double>(n), m4 / (m2 * m2)};
  };
  Eigen::Index rows = 0;
  while (std::getline(csv, line)) {
    std::istringstream fields(line);
    std::string field;
    std::vector<double> values;
    while (std::getline(fields, field, ',')) values.push_back(std::stod(field));
    REQUIRE(values.size() == 7);
    const auto c = static_cast<Eigen::Index>(values[0]);
    CHECK(c == rows);
    const auto b = reference(x, c), a = reference(after, c);
    for (int k = 0; k < 3; ++k) {
      CAPTURE(c);
      CAPTURE(k);
      CHECK(values[static_cast<std::size_t>(1 + k)] == doctest::Approx(b[static_cast<std::size_t>(k)]).epsilon(1e-8));
      CHECK(values[static_cast<std::size_t>(4 + k)] == doctest::Approx(a[static_cast<std::size_t>(k)]).epsilon(1e-8));
    }
    ++rows;
  }
  CHECK(rows == 6);
  // The planted channel stands out in its own columns: a check that the
  // reference is not trivially equal across columns.
  CHECK(reference(x, 4)[2] > 10.0);
}
