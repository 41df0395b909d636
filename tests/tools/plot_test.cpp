// tools/oq/plot.hpp: the font draws each glyph it claims (and only its
// bits), text rotates as a y label reads; charts written to PNG and read
// back with the independent reader of png_reader.hpp put polylines, markers
// and bars where their axes say, leave the background elsewhere, space a
// log axis one decade per factor 10 (measured on the drawn ticks and
// markers), and skip what a log axis cannot place, saying so; bad input is
// refused by name.
#include "support/temp_dir.hpp"
#include "../../tools/oq/plot.hpp"
#include "png_reader.hpp"

#include <doctest/doctest.h>

#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <set>
#include <string>
#include <vector>

namespace fs = std::filesystem;
namespace plot = oq_tool::plot;
namespace reader = oq_test::png_reader;

namespace {

using oq::test::TempDir;

reader::Pixel px(plot::Rgb c) { return {c.r, c.g, c.b}; }
constexpr reader::Pixel kWhitePx{255, 255, 255};
constexpr reader::Pixel kBlackPx{0, 0, 0};

int round_px(double v) { return static_cast<int>(std::lround(v)); }

/// The canvas as the PNG file says it is.
reader::Decoded written(const plot::Canvas& c, const fs::path& dir, const std::string& name) {
  c.write_png(dir / name);
  return reader::decode_file(dir / name);
}

/// Pixels of colour `c` inside `r`.
int count(const reader::Decoded& d, plot::Rect r, reader::Pixel c) {
  int n = 0;
  for (int y = r.y; y < r.bottom(); ++y) {
    for (int x = r.x; x < r.right(); ++x) n += d.at(x, y) == c ? 1 : 0;
  }
  return n;
}

}  // namespace

TEST_CASE("the font: each claimed glyph draws exactly its bits, at any scale; others draw as '?'") {
  std::set<char> claimed;
  std::set<std::vector<std::uint8_t>> shapes;
  for (const plot::font::Glyph& g : plot::font::kGlyphs) {
    CAPTURE(g.c);
    CHECK(claimed.insert(g.c).second);  // each character once
    CHECK(shapes.insert({g.rows.begin(), g.rows.end()}).second);  // no two glyphs alike
    int bits = 0;
    for (std::uint8_t row : g.rows) {
      CHECK(row < 32);  // five columns
      for (int k = 0; k < 5; ++k) bits += (row >> k) & 1;
    }
    CHECK((bits == 0) == (g.c == ' '));
    CHECK(g.drop == (std::string("gpqy").find(g.c) != std::string::npos ? plot::font::kDescent : 0));
    for (int scale : {1, 3}) {
      plot::Canvas c(2 + 5 * scale + 2, 2 + 9 * scale + 2);  // 9 rows: a tail drops 2
      c.text(2, 2, std::string(1, g.c), plot::kBlack, scale);
      int drawn = 0;
      bool exact = true;
      for (int y = 0; y < c.height(); ++y) {
        for (int x = 0; x < c.width(); ++x) {
          const bool on = c.at(x, y) == plot::kBlack;
          drawn += on ? 1 : 0;
          const int col = (x - 2) / scale, row = (y - 2) / scale - g.drop;
          const bool inside = x >= 2 && y >= 2 && col < 5 && row >= 0 && row < 7;
          const bool bit = inside && ((g.rows[static_cast<std::size_t>(row)] >> (4 - col)) & 1);
          exact = exact && on == bit;
        }
      }
      CHECK(drawn == bits * scale * scale);
      CHECK(exact);
    }
  }
  for (char c = '0'; c <= '9'; ++c) CHECK(claimed.count(c) == 1);
  for (char c = 'a'; c <= 'z'; ++c) CHECK(claimed.count(c) == 1);
  for (char c = 'A'; c <= 'Z'; ++c) CHECK(claimed.count(c) == 1);
  for (char c : std::string(" .,-+()[]:/|_=<>%*'!?")) CHECK(claimed.count(c) == 1);
  // Unclaimed bytes (a UTF-8 byte, '~', a control character) draw as '?'.
  for (char c : {static_cast<char>(0xC3), '~', '\t'}) {
    CHECK(plot::font::find(c) == nullptr);
    CHECK(&plot::font::glyph(c) == plot::font::find('?'));
  }
  CHECK(plot::Canvas::text_width("ab", 2) == (2 * 6 - 1) * 2);
}

TEST_CASE("text_up: rotated a quarter turn counter-clockwise, read from bottom to top") {
  // 'L': its stem (column 0) becomes a row along the bottom, its foot (row 6)
  // a column rising at the right end of that row.
  plot::Canvas c(20, 20);
  c.text_up(5, 15, "L", plot::kBlack);
  int drawn = 0;
  for (int y = 0; y < 20; ++y) {
    for (int x = 0; x < 20; ++x) {
      const bool on = c.at(x, y) == plot::kBlack;
      drawn += on ? 1 : 0;
      const bool stem = y == 14 && x >= 5 && x <= 11;
      const bool foot = x == 11 && y >= 10 && y <= 14;
      CHECK(on == (stem || foot));
    }
  }
  CHECK(drawn == 11);
}

TEST_CASE("a line chart on a log axis: lines, markers and ticks where the axes map them") {
  TempDir tmp("line");
  plot::Canvas canvas(640, 420);
  plot::LineChart chart;
  chart.title = "Title";
  chart.x_label = "layer";
  chart.y_label = "|x|";
  chart.log_y = true;
  chart.integer_x = true;
  const plot::Rgb red = plot::kPalette[3], blue = plot::kPalette[0];
  // A polyline of two points, and markers alone a factor 10 apart.
  chart.series.push_back({"line", {0, 3}, {1, 1000}, red, plot::Marker::kNone, true});
  chart.series.push_back({"dots", {0, 1, 2, 3}, {2, 20, 200, 2000}, blue, plot::Marker::kCircle, false});
  const plot::ChartLayout l = plot::draw_line_chart(canvas, {0, 0, 640, 420}, chart);
  const reader::Decoded d = written(canvas, tmp.path, "line.png");
  REQUIRE(d.width == 640);
  REQUIRE(d.height == 420);
  CHECK(l.skipped == 0);
  CHECK(l.y.lo == 1);
  CHECK(l.y.hi == 10000);  // the decade above 2000

  // The polyline: both ends, and its midpoint in log space (straight on a log axis).
  CHECK(d.at(round_px(l.x.to_pixel(0)), round_px(l.y.to_pixel(1))) == px(red));
  CHECK(d.at(round_px(l.x.to_pixel(3)), round_px(l.y.to_pixel(1000))) == px(red));
  CHECK(d.at(round_px(l.x.to_pixel(1.5)), round_px(l.y.to_pixel(std::pow(10.0, 1.5)))) == px(red));
  // Markers at their points; background a decade above the line.
  for (double x : {1.0, 2.0}) CHECK(d.at(round_px(l.x.to_pixel(x)), round_px(l.y.to_pixel(2 * std::pow(10.0, x)))) == px(blue));
  CHECK(d.at(round_px(l.x.to_pixel(1)), round_px(l.y.to_pixel(100))) == kWhitePx);
  CHECK(d.at(round_px(l.x.to_pixel(0.5)), round_px(l.y.to_pixel(5000))) == kWhitePx);
  // Inside the frame only the series' colours and the background.
  const plot::Rect inner{l.plot.x + 1, l.plot.y + 1, l.plot.width - 2, l.plot.height - 2};
  CHECK(count(d, inner, kWhitePx) + count(d, inner, px(red)) + count(d, inner, px(blue)) == inner.width * inner.height);

  // Measured on the image: the blue blobs' centroids rise by equal steps
  // (one decade each), and the major ticks (drawn left of the frame, where
  // minor ticks do not reach) are spaced by the same step.
  std::vector<double> centroid_y;
  for (double x : {0.0, 1.0, 2.0, 3.0}) {
    const int cx = round_px(l.x.to_pixel(x));
    double sum = 0;
    int n = 0;
    for (int y = inner.y; y < inner.bottom(); ++y) {
      for (int xx = cx - 8; xx <= cx + 8; ++xx) {
        if (xx >= inner.x && xx < inner.right() && d.at(xx, y) == px(blue)) {
          sum += y;
          ++n;
        }
      }
    }
    REQUIRE(n > 0);
    centroid_y.push_back(sum / n);
  }
  std::vector<int> tick_rows;
  for (int y = l.plot.y; y < l.plot.bottom(); ++y) {
    if (d.at(l.plot.x - plot::kTickLength, y) == kBlackPx) tick_rows.push_back(y);
  }
  REQUIRE(tick_rows.size() == 5);  // 1, 10, 100, 1000, 10000
  const double decade = (tick_rows.back() - tick_rows.front()) / 4.0;
  CHECK(decade > 50);
  for (std::size_t i = 1; i < tick_rows.size(); ++i) CHECK(std::abs(tick_rows[i] - tick_rows[i - 1] - decade) <= 1);
  for (std::size_t i = 1; i < centroid_y.size(); ++i) CHECK(std::abs(centroid_y[i - 1] - centroid_y[i] - decade) <= 1.0);
  // The blob for 2 sits log10(2) of a decade above the tick for 1.
  CHECK(std::abs(tick_rows.back() - centroid_y[0] - std::log10(2.0) * decade) <= 1.0);

  // Title above the frame, legend to its right, in the series' colours.
  CHECK(count(d, {0, 0, 640, l.plot.y}, kBlackPx) > 20);
  const plot::Rect right{l.plot.right(), 0, 640 - l.plot.right(), 420};
  CHECK(count(d, right, px(red)) > 20);
  CHECK(count(d, right, px(blue)) > 20);
}

TEST_CASE("log_axis: whole decades that hold the data, even a hair above a power of ten") {
  for (double v : {1.0, 7.0, 1000.0, 1e-3, 3e-7, 2.5e12}) {
    for (double x : {v, std::nextafter(v, 0.0), std::nextafter(v, 2 * v)}) {
      CAPTURE(x);
      const plot::Axis a = plot::log_axis(x, x);
      CHECK(a.lo <= x);
      CHECK(a.hi >= x);
      CHECK(a.hi > a.lo);
      CHECK(std::abs(std::log10(a.lo) - std::round(std::log10(a.lo))) < 1e-12);  // decades
      CHECK(std::abs(std::log10(a.hi) - std::round(std::log10(a.hi))) < 1e-12);
    }
  }
  const plot::Axis a = plot::log_axis(0.02, 3e5);
  CHECK(a.lo == doctest::Approx(0.01));
  CHECK(a.hi == doctest::Approx(1e6));
  CHECK(a.ticks().size() == 9);  // 0.01 .. 1e6
  CHECK(a.label(1e6) == "1e6");
  CHECK(a.label(0.01) == "0.01");
}

TEST_CASE("a log axis skips zero, negative and NaN values, breaks the line there, and says so") {
  TempDir tmp("skip");
  plot::Canvas canvas(500, 300);
  plot::LineChart chart;
  chart.log_y = true;
  const plot::Rgb green = plot::kPalette[2];
  chart.series.push_back({"", {0, 1, 2, 3, 4, 5}, {1, 0, 100, NAN, -5, 1000}, green, plot::Marker::kSquare, true});
  const plot::ChartLayout l = plot::draw_line_chart(canvas, {0, 0, 500, 300}, chart);
  const reader::Decoded d = written(canvas, tmp.path, "skip.png");
  CHECK(l.skipped == 3);
  CHECK(l.y.lo == 1);
  CHECK(l.y.hi == 1000);
  for (auto [x, y] : {std::pair{0.0, 1.0}, std::pair{2.0, 100.0}, std::pair{5.0, 1000.0}}) {
    CHECK(d.at(round_px(l.x.to_pixel(x)), round_px(l.y.to_pixel(y))) == px(green));
  }
  // No segment across the gaps: 1 → 100 and 100 → 1000 are not joined.
  CHECK(d.at(round_px(l.x.to_pixel(1)), round_px(l.y.to_pixel(10))) == kWhitePx);
  CHECK(d.at(round_px(l.x.to_pixel(3.5)), round_px(l.y.to_pixel(std::pow(10.0, 2.5)))) == kWhitePx);
  // The note under the plot, in grey.
  const plot::Rect below{0, l.plot.bottom(), 500, 300 - l.plot.bottom()};
  CHECK(count(d, below, px(plot::kGrey)) > 30);

  // Without anything to skip, no note.
  plot::Canvas clean(500, 300);
  chart.series[0].y = {1, 2, 100, 3, 5, 1000};
  CHECK(plot::draw_line_chart(clean, {0, 0, 500, 300}, chart).skipped == 0);
  CHECK(count(written(clean, tmp.path, "clean.png"), below, px(plot::kGrey)) == 0);

  // Nothing placeable at all: an empty 1..10 axis, no crash, all counted.
  plot::Canvas empty(500, 300);
  chart.series[0].y = {0, 0, NAN, -1, INFINITY, 0};
  const plot::ChartLayout e = plot::draw_line_chart(empty, {0, 0, 500, 300}, chart);
  CHECK(e.skipped == 6);
  CHECK(e.y.lo == 1);
  CHECK(e.y.hi == 10);
  CHECK(reader::decode_file((empty.write_png(tmp.path / "empty.png"), tmp.path / "empty.png")).width == 500);
}

TEST_CASE("a bar chart: one outlier channel among 4096 stays visible, bars reach their values") {
  TempDir tmp("bars");
  const plot::Rgb blue = plot::kPalette[0];
  plot::BarChart chart;
  chart.title = "layer 0, qkv input";
  chart.x_label = "channel";
  chart.y_label = "max |x|";
  chart.values.assign(4096, 1.0);
  chart.values[1234] = 50;
  chart.values[77] = NAN;
  chart.color = blue;
  plot::Canvas canvas(700, 260);
  const plot::ChartLayout l = plot::draw_bar_chart(canvas, {0, 0, 700, 260}, chart);
  const reader::Decoded d = written(canvas, tmp.path, "bars.png");
  CHECK(l.skipped == 1);
  CHECK(l.y.lo == 0);
  const int spike = round_px(l.x.to_pixel(1234));
  // The spike's column is blue from the baseline up to 50 and white above.
  int top = l.plot.bottom() - 1;  // the frame line; the bars start above it
  while (top > l.plot.y + 1 && d.at(spike, top - 1) == px(blue)) --top;
  CHECK(std::abs(top - l.y.to_pixel(50)) <= 1);
  CHECK(d.at(spike, round_px(l.y.to_pixel(50)) - 3) == kWhitePx);
  // Elsewhere bars reach 1 and no higher.
  const int other = round_px(l.x.to_pixel(3000));
  CHECK(d.at(other, round_px(l.y.to_pixel(0.5))) == px(blue));
  CHECK(d.at(other, round_px(l.y.to_pixel(2))) == kWhitePx);
  // The spike is the only column reaching 10.
  int tall = 0;
  for (int x = l.plot.x + 1; x < l.plot.right() - 1; ++x) tall += d.at(x, round_px(l.y.to_pixel(10))) == px(blue) ? 1 : 0;
  CHECK(tall == 1);

  // Few values: wide bars, each as tall as its value, one after another.
  plot::BarChart few;
  few.values = {1, 2, 3, 4, 5};
  few.color = blue;
  plot::Canvas small(400, 200);
  const plot::ChartLayout f = plot::draw_bar_chart(small, {0, 0, 400, 200}, few);
  for (int i = 0; i < 5; ++i) {
    const int x = round_px(f.x.to_pixel(i));
    CHECK(small.at(x, round_px(f.y.to_pixel(i + 0.5))) == blue);
    CHECK(small.at(x, round_px(f.y.to_pixel(i + 1.2))) == plot::kWhite);
  }
  // Stacked panels with a common tick_label_width line up, whatever their labels.
  plot::BarChart narrow, wide;
  narrow.values = {1, 4};
  wide.values = {0.25, 0.5};  // labels "0.1" .. "0.5" against "0" .. "4"
  CHECK(plot::tick_label_width(plot::bar_value_axis(wide.values)) >
        plot::tick_label_width(plot::bar_value_axis(narrow.values)));
  narrow.tick_label_width = wide.tick_label_width = plot::tick_label_width(plot::bar_value_axis(wide.values));
  plot::Canvas stacked(400, 400);
  CHECK(plot::draw_bar_chart(stacked, {0, 0, 400, 200}, narrow).plot.x ==
        plot::draw_bar_chart(stacked, {0, 200, 400, 200}, wide).plot.x);
  // All zero or empty: an axis of 0..1, nothing to skip.
  plot::Canvas zero(400, 200);
  few.values.assign(7, 0.0);
  CHECK(plot::draw_bar_chart(zero, {0, 0, 400, 200}, few).y.hi > 0);
  few.values.clear();
  CHECK(plot::draw_bar_chart(zero, {0, 0, 400, 200}, few).skipped == 0);
}

TEST_CASE("bad input is refused by name") {
  CHECK_THROWS_WITH_AS(plot::Canvas(0, 10), doctest::Contains("width"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(plot::Canvas(10, 100000), doctest::Contains("height"), std::invalid_argument);
  plot::Canvas c(300, 200);
  CHECK_THROWS_AS(c.at(300, 0), std::out_of_range);
  plot::LineChart ragged;
  ragged.series.push_back({"a", {0, 1, 2}, {1, 2}, plot::kBlack, plot::Marker::kCircle, true});
  CHECK_THROWS_WITH_AS(plot::draw_line_chart(c, {0, 0, 300, 200}, ragged), doctest::Contains("3 x values but 2 y"),
                       std::invalid_argument);
  plot::BarChart bars;
  bars.values = {1, 2};
  CHECK_THROWS_WITH_AS(plot::draw_bar_chart(c, {0, 0, 40, 30}, bars), doctest::Contains("no room"), std::invalid_argument);
  // Lines with far-away or non-finite ends clip or draw nothing, without a long loop.
  c.line(-1e7, 100, 1e7, 100, plot::kBlack);
  CHECK(c.at(0, 100) == plot::kBlack);
  CHECK(c.at(299, 100) == plot::kBlack);
  c.line(-1e300, 50, 1e300, -1e300, plot::kBlack);  // returns at once (the clipped part is lost to rounding)
  c.line(NAN, 0, 10, 10, plot::kBlack);
  CHECK(c.at(10, 10) == plot::kWhite);
  CHECK_THROWS_WITH_AS(c.write_png("/nonexistent_dir_oq/x.png"), doctest::Contains("/nonexistent_dir_oq/x.png"),
                       std::runtime_error);
}
