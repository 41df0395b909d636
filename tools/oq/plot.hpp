// tools/oq/plot.hpp: a small raster canvas and two chart kinds, enough for
// `oq analyze`'s figures (massive.png, channels.png) without matplotlib:
//
//   - Canvas: an RGB image with clipped pixels, lines of a given thickness,
//     filled rectangles, markers, text in a built-in 5 × 7 bitmap font
//     (scaled by whole pixels; horizontal, or rotated for a y-axis label),
//     written as PNG by png.hpp;
//   - draw_line_chart: polylines with markers over a linear or log-scale y
//     axis, ticks with numeric labels, title, axis labels and a legend;
//   - draw_bar_chart: one bar per value (per channel), linear y from 0.
//
// Both charts return their ChartLayout (plot rectangle and the axes' value →
// pixel maps) so that a caller or a test can say where a value was drawn.
// Values a chart cannot place (NaN, ±Inf, and ≤ 0 on a log axis) are not
// drawn: a polyline breaks there, as matplotlib's does at a NaN, and the
// figure says how many were left out (ChartLayout::skipped).
#pragma once

#include "png.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace oq_tool::plot {

struct Rgb {
  std::uint8_t r = 0, g = 0, b = 0;
  friend bool operator==(const Rgb&, const Rgb&) = default;
};

inline constexpr double kInf = std::numeric_limits<double>::infinity();

inline constexpr Rgb kWhite{255, 255, 255};
inline constexpr Rgb kBlack{0, 0, 0};
inline constexpr Rgb kGrey{110, 110, 110};
/// matplotlib's "tab10" colours in its order, so the figures read like the
/// papers' (tab:blue, tab:orange, tab:green, tab:red, tab:purple, tab:brown).
inline constexpr std::array<Rgb, 6> kPalette{
    {{31, 119, 180}, {255, 127, 14}, {44, 160, 44}, {214, 39, 40}, {148, 103, 189}, {140, 86, 75}}};

// ---------------------------------------------------------------------------
// The font: 5 × 7 pixel glyphs, one byte per row from the top, bit 4 the
// leftmost column (0b10000) and bit 0 the rightmost. Rows 0-6 of a line
// hold the capitals and digits (row 6 is the baseline); g, p, q and y
// drop 2 rows, so their tails hang below the baseline (rows 7-8) and their
// bodies sit on the lower-case height (rows 2-6). Each glyph advances 6
// columns (one blank column between letters). Digits, both cases of the
// Latin letters and the symbols the figures need; any other byte (including
// each byte of a UTF-8 sequence) draws as '?'.
namespace font {

inline constexpr int kWidth = 5;
inline constexpr int kHeight = 7;
inline constexpr int kAdvance = 6;
inline constexpr int kDescent = 2;  ///< rows a dropped glyph reaches below the baseline

struct Glyph {
  char c;
  std::array<std::uint8_t, kHeight> rows;
  int drop = 0;  ///< rows drawn lower: kDescent for g, p, q, y
};

// clang-format off
inline constexpr std::array<Glyph, 83> kGlyphs{{
    {' ', {0b00000, 0b00000, 0b00000, 0b00000, 0b00000, 0b00000, 0b00000}},
    {'0', {0b01110, 0b10001, 0b10011, 0b10101, 0b11001, 0b10001, 0b01110}},
    {'1', {0b00100, 0b01100, 0b00100, 0b00100, 0b00100, 0b00100, 0b01110}},
    {'2', {0b01110, 0b10001, 0b00001, 0b00010, 0b00100, 0b01000, 0b11111}},
    {'3', {0b11111, 0b00010, 0b00100, 0b00010, 0b00001, 0b10001, 0b01110}},
    {'4', {0b00010, 0b00110, 0b01010, 0b10010, 0b11111, 0b00010, 0b00010}},
    {'5', {0b11111, 0b10000, 0b11110, 0b00001, 0b00001, 0b10001, 0b01110}},
    {'6', {0b00110, 0b01000, 0b10000, 0b11110, 0b10001, 0b10001, 0b01110}},
    {'7', {0b11111, 0b00001, 0b00010, 0b00100, 0b01000, 0b01000, 0b01000}},
    {'8', {0b01110, 0b10001, 0b10001, 0b01110, 0b10001, 0b10001, 0b01110}},
    {'9', {0b01110, 0b10001, 0b10001, 0b01111, 0b00001, 0b00010, 0b01100}},
    {'A', {0b01110, 0b10001, 0b10001, 0b11111, 0b10001, 0b10001, 0b10001}},
    {'B', {0b11110, 0b10001, 0b10001, 0b11110, 0b10001, 0b10001, 0b11110}},
    {'C', {0b01110, 0b10001, 0b10000, 0b10000, 0b10000, 0b10001, 0b01110}},
    {'D', {0b11100, 0b10010, 0b10001, 0b10001, 0b10001, 0b10010, 0b11100}},
    {'E', {0b11111, 0b10000, 0b10000, 0b11110, 0b10000, 0b10000, 0b11111}},
    {'F', {0b11111, 0b10000, 0b10000, 0b11110, 0b10000, 0b10000, 0b10000}},
    {'G', {0b01110, 0b10001, 0b10000, 0b10111, 0b10001, 0b10001, 0b01111}},
    {'H', {0b10001, 0b10001, 0b10001, 0b11111, 0b10001, 0b10001, 0b10001}},
    {'I', {0b01110, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100, 0b01110}},
    {'J', {0b00111, 0b00010, 0b00010, 0b00010, 0b00010, 0b10010, 0b01100}},
    {'K', {0b10001, 0b10010, 0b10100, 0b11000, 0b10100, 0b10010, 0b10001}},
    {'L', {0b10000, 0b10000, 0b10000, 0b10000, 0b10000, 0b10000, 0b11111}},
    {'M', {0b10001, 0b11011, 0b10101, 0b10101, 0b10001, 0b10001, 0b10001}},
    {'N', {0b10001, 0b10001, 0b11001, 0b10101, 0b10011, 0b10001, 0b10001}},
    {'O', {0b01110, 0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b01110}},
    {'P', {0b11110, 0b10001, 0b10001, 0b11110, 0b10000, 0b10000, 0b10000}},
    {'Q', {0b01110, 0b10001, 0b10001, 0b10001, 0b10101, 0b10010, 0b01101}},
    {'R', {0b11110, 0b10001, 0b10001, 0b11110, 0b10100, 0b10010, 0b10001}},
    {'S', {0b01111, 0b10000, 0b10000, 0b01110, 0b00001, 0b00001, 0b11110}},
    {'T', {0b11111, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100}},
    {'U', {0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b01110}},
    {'V', {0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b01010, 0b00100}},
    {'W', {0b10001, 0b10001, 0b10001, 0b10101, 0b10101, 0b10101, 0b01010}},
    {'X', {0b10001, 0b10001, 0b01010, 0b00100, 0b01010, 0b10001, 0b10001}},
    {'Y', {0b10001, 0b10001, 0b10001, 0b01010, 0b00100, 0b00100, 0b00100}},
    {'Z', {0b11111, 0b00001, 0b00010, 0b00100, 0b01000, 0b10000, 0b11111}},
    {'a', {0b00000, 0b00000, 0b01110, 0b00001, 0b01111, 0b10001, 0b01111}},
    {'b', {0b10000, 0b10000, 0b10110, 0b11001, 0b10001, 0b10001, 0b11110}},
    {'c', {0b00000, 0b00000, 0b01110, 0b10000, 0b10000, 0b10001, 0b01110}},
    {'d', {0b00001, 0b00001, 0b01101, 0b10011, 0b10001, 0b10001, 0b01111}},
    {'e', {0b00000, 0b00000, 0b01110, 0b10001, 0b11111, 0b10000, 0b01110}},
    {'f', {0b00110, 0b01001, 0b01000, 0b11100, 0b01000, 0b01000, 0b01000}},
    {'g', {0b01111, 0b10001, 0b10001, 0b10001, 0b01111, 0b00001, 0b01110}, 2},
    {'h', {0b10000, 0b10000, 0b10110, 0b11001, 0b10001, 0b10001, 0b10001}},
    {'i', {0b00100, 0b00000, 0b01100, 0b00100, 0b00100, 0b00100, 0b01110}},
    {'j', {0b00010, 0b00000, 0b00110, 0b00010, 0b00010, 0b10010, 0b01100}},
    {'k', {0b10000, 0b10000, 0b10010, 0b10100, 0b11000, 0b10100, 0b10010}},
    {'l', {0b01100, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100, 0b01110}},
    {'m', {0b00000, 0b00000, 0b11010, 0b10101, 0b10101, 0b10001, 0b10001}},
    {'n', {0b00000, 0b00000, 0b10110, 0b11001, 0b10001, 0b10001, 0b10001}},
    {'o', {0b00000, 0b00000, 0b01110, 0b10001, 0b10001, 0b10001, 0b01110}},
    {'p', {0b11110, 0b10001, 0b10001, 0b10001, 0b11110, 0b10000, 0b10000}, 2},
    {'q', {0b01111, 0b10001, 0b10001, 0b10001, 0b01111, 0b00001, 0b00001}, 2},
    {'r', {0b00000, 0b00000, 0b10110, 0b11001, 0b10000, 0b10000, 0b10000}},
    {'s', {0b00000, 0b00000, 0b01110, 0b10000, 0b01110, 0b00001, 0b11110}},
    {'t', {0b01000, 0b01000, 0b11100, 0b01000, 0b01000, 0b01001, 0b00110}},
    {'u', {0b00000, 0b00000, 0b10001, 0b10001, 0b10001, 0b10011, 0b01101}},
    {'v', {0b00000, 0b00000, 0b10001, 0b10001, 0b10001, 0b01010, 0b00100}},
    {'w', {0b00000, 0b00000, 0b10001, 0b10001, 0b10101, 0b10101, 0b01010}},
    {'x', {0b00000, 0b00000, 0b10001, 0b01010, 0b00100, 0b01010, 0b10001}},
    {'y', {0b10001, 0b10001, 0b10001, 0b10001, 0b01111, 0b00001, 0b01110}, 2},
    {'z', {0b00000, 0b00000, 0b11111, 0b00010, 0b00100, 0b01000, 0b11111}},
    {'.', {0b00000, 0b00000, 0b00000, 0b00000, 0b00000, 0b01100, 0b01100}},
    {',', {0b00000, 0b00000, 0b00000, 0b00000, 0b01100, 0b00100, 0b01000}},
    {'-', {0b00000, 0b00000, 0b00000, 0b11111, 0b00000, 0b00000, 0b00000}},
    {'+', {0b00000, 0b00100, 0b00100, 0b11111, 0b00100, 0b00100, 0b00000}},
    {'(', {0b00010, 0b00100, 0b01000, 0b01000, 0b01000, 0b00100, 0b00010}},
    {')', {0b01000, 0b00100, 0b00010, 0b00010, 0b00010, 0b00100, 0b01000}},
    {'[', {0b01110, 0b01000, 0b01000, 0b01000, 0b01000, 0b01000, 0b01110}},
    {']', {0b01110, 0b00010, 0b00010, 0b00010, 0b00010, 0b00010, 0b01110}},
    {':', {0b00000, 0b01100, 0b01100, 0b00000, 0b01100, 0b01100, 0b00000}},
    {'/', {0b00000, 0b00001, 0b00010, 0b00100, 0b01000, 0b10000, 0b00000}},
    {'|', {0b00100, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100}},
    {'_', {0b00000, 0b00000, 0b00000, 0b00000, 0b00000, 0b00000, 0b11111}},
    {'=', {0b00000, 0b00000, 0b11111, 0b00000, 0b11111, 0b00000, 0b00000}},
    {'<', {0b00010, 0b00100, 0b01000, 0b10000, 0b01000, 0b00100, 0b00010}},
    {'>', {0b01000, 0b00100, 0b00010, 0b00001, 0b00010, 0b00100, 0b01000}},
    {'%', {0b11000, 0b11001, 0b00010, 0b00100, 0b01000, 0b10011, 0b00011}},
    {'*', {0b00000, 0b00100, 0b10101, 0b01110, 0b10101, 0b00100, 0b00000}},
    {'\'', {0b01100, 0b00100, 0b01000, 0b00000, 0b00000, 0b00000, 0b00000}},
    {'!', {0b00100, 0b00100, 0b00100, 0b00100, 0b00100, 0b00000, 0b00100}},
    {'?', {0b01110, 0b10001, 0b00001, 0b00010, 0b00100, 0b00000, 0b00100}},
}};
// clang-format on

/// The glyph of `c`, or nullptr when the font has none.
inline const Glyph* find(char c) {
  for (const Glyph& g : kGlyphs) {
    if (g.c == c) return &g;
  }
  return nullptr;
}

/// The glyph drawn for `c`: its own, or '?'.
inline const Glyph& glyph(char c) {
  const Glyph* g = find(c);
  return g != nullptr ? *g : *find('?');
}

}  // namespace font

// ---------------------------------------------------------------------------

/// A rectangle of pixels: columns x .. x + width - 1, rows y .. y + height - 1.
struct Rect {
  int x = 0, y = 0, width = 0, height = 0;
  int right() const { return x + width; }    ///< one past the last column
  int bottom() const { return y + height; }  ///< one past the last row
  bool contains(int px, int py) const { return px >= x && px < right() && py >= y && py < bottom(); }
};

enum class Marker { kNone, kCircle, kSquare, kTriangle, kCross };

/// An RGB image, row 0 at the top. Drawing outside the canvas, or outside
/// the clip rectangle when one is set, changes nothing.
class Canvas {
 public:
  static constexpr int kMaxSide = 16384;

  /// Throws std::invalid_argument naming the parameter unless
  /// 1 ≤ width, height ≤ kMaxSide.
  Canvas(int width, int height, Rgb background = kWhite) : width_(width), height_(height) {
    if (width < 1 || width > kMaxSide) {
      throw std::invalid_argument("plot::Canvas: width must be in 1.." + std::to_string(kMaxSide) + ", got " +
                                  std::to_string(width));
    }
    if (height < 1 || height > kMaxSide) {
      throw std::invalid_argument("plot::Canvas: height must be in 1.." + std::to_string(kMaxSide) + ", got " +
                                  std::to_string(height));
    }
    rgb_.resize(3 * static_cast<std::size_t>(width) * static_cast<std::size_t>(height));
    for (std::size_t i = 0; i < rgb_.size(); i += 3) {
      rgb_[i] = background.r;
      rgb_[i + 1] = background.g;
      rgb_[i + 2] = background.b;
    }
    clear_clip();
  }

  int width() const { return width_; }
  int height() const { return height_; }
  const std::vector<std::uint8_t>& rgb() const { return rgb_; }

  /// The pixel at column x, row y; throws std::out_of_range outside.
  Rgb at(int x, int y) const {
    if (x < 0 || x >= width_ || y < 0 || y >= height_) {
      throw std::out_of_range("plot::Canvas::at: (" + std::to_string(x) + ", " + std::to_string(y) +
                              ") is outside the " + std::to_string(width_) + " × " + std::to_string(height_) +
                              " canvas");
    }
    const std::size_t i = 3 * (static_cast<std::size_t>(y) * static_cast<std::size_t>(width_) + static_cast<std::size_t>(x));
    return {rgb_[i], rgb_[i + 1], rgb_[i + 2]};
  }

  void set_clip(Rect r) { clip_ = r; }
  void clear_clip() { clip_ = {0, 0, width_, height_}; }

  void set(int x, int y, Rgb c) {
    if (x < 0 || x >= width_ || y < 0 || y >= height_ || !clip_.contains(x, y)) return;
    const std::size_t i = 3 * (static_cast<std::size_t>(y) * static_cast<std::size_t>(width_) + static_cast<std::size_t>(x));
    rgb_[i] = c.r;
    rgb_[i + 1] = c.g;
    rgb_[i + 2] = c.b;
  }

  void fill(Rect r, Rgb c) {
    const int x0 = std::max(r.x, 0), x1 = std::min(r.right(), width_);
    const int y0 = std::max(r.y, 0), y1 = std::min(r.bottom(), height_);
    for (int y = y0; y < y1; ++y) {
      for (int x = x0; x < x1; ++x) set(x, y, c);
    }
  }

  void outline(Rect r, Rgb c) {
    for (int x = r.x; x < r.right(); ++x) {
      set(x, r.y, c);
      set(x, r.bottom() - 1, c);
    }
    for (int y = r.y; y < r.bottom(); ++y) {
      set(r.x, y, c);
      set(r.right() - 1, y, c);
    }
  }

  /// A straight line between pixel centres (x0, y0) and (x1, y1), each point
  /// a thickness × thickness square. The segment is first clipped to the
  /// canvas (Liang–Barsky), so far-away or huge endpoints cost nothing;
  /// a non-finite endpoint draws nothing.
  void line(double x0, double y0, double x1, double y1, Rgb c, int thickness = 1) {
    if (!(std::isfinite(x0) && std::isfinite(y0) && std::isfinite(x1) && std::isfinite(y1))) return;
    const double pad = thickness + 1.0;
    const double dx = x1 - x0, dy = y1 - y0;
    double t0 = 0, t1 = 1;
    // Each edge: p·t ≤ q keeps the point inside.
    const double p[4] = {-dx, dx, -dy, dy};
    const double q[4] = {x0 + pad, width_ - 1 + pad - x0, y0 + pad, height_ - 1 + pad - y0};
    for (int k = 0; k < 4; ++k) {
      if (p[k] == 0) {
        if (q[k] < 0) return;
      } else {
        const double t = q[k] / p[k];
        if (p[k] < 0) {
          t0 = std::max(t0, t);
        } else {
          t1 = std::min(t1, t);
        }
      }
    }
    if (t0 > t1) return;
    int ax = static_cast<int>(std::lround(x0 + t0 * dx)), ay = static_cast<int>(std::lround(y0 + t0 * dy));
    const int bx = static_cast<int>(std::lround(x0 + t1 * dx)), by = static_cast<int>(std::lround(y0 + t1 * dy));
    // Bresenham over the clipped integer endpoints.
    const int sx = ax < bx ? 1 : -1, sy = ay < by ? 1 : -1;
    const int ddx = std::abs(bx - ax), ddy = -std::abs(by - ay);
    int err = ddx + ddy;
    const int lo = -(thickness - 1) / 2;
    for (;;) {
      for (int j = 0; j < thickness; ++j) {
        for (int i = 0; i < thickness; ++i) set(ax + lo + i, ay + lo + j, c);
      }
      if (ax == bx && ay == by) break;
      const int e2 = 2 * err;
      if (e2 >= ddy) {
        err += ddy;
        ax += sx;
      }
      if (e2 <= ddx) {
        err += ddx;
        ay += sy;
      }
    }
  }

  /// A filled marker centred on pixel (x, y), `radius` pixels from centre
  /// to edge (a cross: two diagonals two pixels thick).
  void marker(double x, double y, Marker m, Rgb c, int radius) {
    if (!(std::isfinite(x) && std::isfinite(y)) || m == Marker::kNone) return;
    const int cx = static_cast<int>(std::lround(x)), cy = static_cast<int>(std::lround(y));
    for (int dy = -radius; dy <= radius; ++dy) {
      for (int dx = -radius; dx <= radius; ++dx) {
        bool on = false;
        switch (m) {
          case Marker::kCircle: on = dx * dx + dy * dy <= radius * radius + radius / 2; break;
          case Marker::kSquare: on = true; break;
          case Marker::kTriangle: on = 2 * std::abs(dx) <= dy + radius; break;  // apex up, base at dy = radius
          case Marker::kCross: on = std::abs(std::abs(dx) - std::abs(dy)) <= 1; break;
          case Marker::kNone: break;
        }
        if (on) set(cx + dx, cy + dy, c);
      }
    }
  }

  /// Width in pixels of `s` drawn at `scale` (no trailing blank column).
  static int text_width(std::string_view s, int scale) {
    return s.empty() ? 0 : (static_cast<int>(s.size()) * font::kAdvance - 1) * scale;
  }
  static int text_height(int scale) { return font::kHeight * scale; }

  /// `s` with its top-left corner at (x, y), each font pixel a scale × scale
  /// square; tails of g, p, q, y reach font::kDescent · scale rows below
  /// text_height.
  void text(int x, int y, std::string_view s, Rgb c, int scale = 1) {
    for (std::size_t k = 0; k < s.size(); ++k) {
      const font::Glyph& g = font::glyph(s[k]);
      const int left = x + static_cast<int>(k) * font::kAdvance * scale;
      for (int r = 0; r < font::kHeight; ++r) {
        for (int col = 0; col < font::kWidth; ++col) {
          if ((g.rows[static_cast<std::size_t>(r)] >> (font::kWidth - 1 - col)) & 1u) {
            fill({left + col * scale, y + (r + g.drop) * scale, scale, scale}, c);
          }
        }
      }
    }
  }

  /// `s` rotated 90° counter-clockwise (read bottom to top, as a y-axis
  /// label), its first letter's bottom-left corner at (x, y): the glyphs'
  /// tops face left, so font row r lands in column x + r (tails to the right).
  void text_up(int x, int y, std::string_view s, Rgb c, int scale = 1) {
    for (std::size_t k = 0; k < s.size(); ++k) {
      const font::Glyph& g = font::glyph(s[k]);
      const int base = y - static_cast<int>(k) * font::kAdvance * scale;
      for (int r = 0; r < font::kHeight; ++r) {
        for (int col = 0; col < font::kWidth; ++col) {
          if ((g.rows[static_cast<std::size_t>(r)] >> (font::kWidth - 1 - col)) & 1u) {
            fill({x + (r + g.drop) * scale, base - (col + 1) * scale, scale, scale}, c);
          }
        }
      }
    }
  }

  /// png::write_rgb of the canvas (atomic; std::runtime_error naming the path).
  void write_png(const std::filesystem::path& path) const { png::write_rgb(path, width_, height_, rgb_); }

 private:
  int width_, height_;
  std::vector<std::uint8_t> rgb_;
  Rect clip_;
};

// ---------------------------------------------------------------------------
// Axes.

/// One axis: the value range [lo, hi] shown, linear or log10, mapped onto
/// pixels pixel_lo (where lo lands) .. pixel_hi. For a y axis pixel_lo is
/// the bottom row, larger than pixel_hi.
struct Axis {
  double lo = 0, hi = 1;
  bool log = false;
  double step = 0.2;  ///< linear: distance between major ticks; log: decades between them
  double pixel_lo = 0, pixel_hi = 1;

  /// The pixel coordinate of value v: linear, or linear in log10(v).
  double to_pixel(double v) const {
    const double t = log ? (std::log10(v) - std::log10(lo)) / (std::log10(hi) - std::log10(lo)) : (v - lo) / (hi - lo);
    return pixel_lo + t * (pixel_hi - pixel_lo);
  }
  /// Whether v can be placed on this axis (finite; > 0 on a log axis).
  bool placeable(double v) const { return std::isfinite(v) && (!log || v > 0); }

  /// The major tick values inside [lo, hi].
  std::vector<double> ticks() const {
    std::vector<double> t;
    if (log) {
      const int a = static_cast<int>(std::lround(std::log10(lo))), b = static_cast<int>(std::lround(std::log10(hi)));
      const int stride = std::max(1, static_cast<int>(std::lround(step)));
      for (int k = a; k <= b; k += stride) t.push_back(std::pow(10.0, k));
    } else {
      const double first = std::ceil(lo / step - 1e-9);
      for (double k = first; k * step <= hi + step * 1e-9; k += 1) t.push_back(std::abs(k) < 0.5 ? 0.0 : k * step);
    }
    return t;
  }

  /// A tick's label: "%g" with a short exponent ("1e5", "2.5e-4"); on a
  /// log axis, decades from 0.001 to 10000 written out, others as "1eK".
  std::string label(double v) const {
    char b[48];
    if (log) {
      const int k = static_cast<int>(std::lround(std::log10(v)));
      if (k >= -3 && k <= 4) {
        std::snprintf(b, sizeof b, "%g", std::pow(10.0, k));
      } else {
        std::snprintf(b, sizeof b, "1e%d", k);
      }
      return b;
    }
    std::snprintf(b, sizeof b, "%.6g", v);
    std::string s = b;
    // "1e+05" → "1e5", "2.5e-04" → "2.5e-4".
    const auto e = s.find('e');
    if (e != std::string::npos) {
      std::string mantissa = s.substr(0, e), exponent = s.substr(e + 1);
      const bool negative = exponent[0] == '-';
      exponent = exponent.substr(1);
      while (exponent.size() > 1 && exponent[0] == '0') exponent.erase(0, 1);
      s = mantissa + "e" + (negative ? "-" : "") + exponent;
    }
    return s;
  }
};

/// The smallest of 1, 2, 5 × 10^k at least `raw` (raw > 0).
inline double nice_step(double raw) {
  const double decade = std::pow(10.0, std::floor(std::log10(raw)));
  for (double m : {1.0, 2.0, 5.0, 10.0}) {
    if (m * decade >= raw * (1 - 1e-9)) return m * decade;
  }
  return 10 * decade;
}

/// A linear axis showing [min, max] plus `margin` of the range on each
/// side (at least one unit around a single value), about five ticks;
/// `integer`: ticks on whole numbers only. Non-finite bounds give [0, 1].
inline Axis linear_axis(double min, double max, double margin, bool integer) {
  Axis a;
  if (!(std::isfinite(min) && std::isfinite(max) && min <= max)) {
    min = 0;
    max = 1;
  }
  if (min == max) {
    const double d = min == 0 ? 1.0 : std::abs(min) * 0.5;
    min -= d;
    max += d;
  }
  const double range = max - min;
  a.lo = min - margin * range;
  a.hi = max + margin * range;
  a.step = nice_step(range / 5);
  if (integer) a.step = std::max(1.0, std::round(a.step));
  return a;
}

/// A log axis from the decade at or below `min` to the decade at or above
/// `max` (both > 0 and finite, else 1 .. 10), at most about eight labelled
/// decades.
inline Axis log_axis(double min, double max) {
  Axis a;
  a.log = true;
  if (!(std::isfinite(min) && std::isfinite(max) && min > 0 && min <= max)) {
    min = 1;
    max = 10;
  }
  int k0 = static_cast<int>(std::floor(std::log10(min))), k1 = static_cast<int>(std::ceil(std::log10(max)));
  // log10 can land a hair off an exact power; keep a decade that holds the value.
  if (std::pow(10.0, k0) > min) --k0;
  if (std::pow(10.0, k1) < max) ++k1;
  if (k1 == k0) ++k1;
  a.lo = std::pow(10.0, k0);
  a.hi = std::pow(10.0, k1);
  a.step = std::ceil((k1 - k0) / 8.0);
  return a;
}

// ---------------------------------------------------------------------------
// Charts.

struct Series {
  std::string label;  ///< in the legend; empty: not listed
  std::vector<double> x, y;
  Rgb color = kPalette[0];
  Marker marker = Marker::kCircle;
  bool line = true;  ///< join consecutive placeable points
};

struct LineChart {
  std::string title, x_label, y_label;
  bool log_y = false;
  bool integer_x = false;  ///< x ticks on whole numbers (layer indices)
  int tick_label_width = 0;  ///< at least this many pixels for the y tick labels (lines up stacked charts)
  std::vector<Series> series;
};

struct BarChart {
  std::string title, x_label, y_label;
  std::vector<double> values;  ///< bar i at x = i
  Rgb color = kPalette[0];
  int tick_label_width = 0;  ///< at least this many pixels for the y tick labels (lines up stacked charts)
};

/// Where a chart was drawn: the plot rectangle (inside the frame line) and
/// the axes mapping values to pixel coordinates; `skipped`: values not
/// drawn because the axis cannot place them.
struct ChartLayout {
  Rect plot;
  Axis x, y;
  std::size_t skipped = 0;
  int tick_label_width = 0;  ///< room left of the y ticks for their labels
};

inline constexpr int kTextScale = 2;  ///< font pixels per glyph pixel in the charts
inline constexpr int kTickLength = 5;
inline constexpr int kMarkerRadius = 4;

/// Pixels the widest tick label of `a` takes in a chart.
inline int tick_label_width(const Axis& a) {
  int widest = 0;
  for (double t : a.ticks()) widest = std::max(widest, Canvas::text_width(a.label(t), kTextScale));
  return widest;
}

/// The value axis of a bar chart of `values`: from min(0, smallest) to the
/// largest plus 5 % (matplotlib's top margin); NaN and ±Inf ignored; 0 .. 1
/// when nothing finite is above the bottom.
inline Axis bar_value_axis(const std::vector<double>& values) {
  double lo = 0, hi = -kInf;
  for (double v : values) {
    if (!std::isfinite(v)) continue;
    lo = std::min(lo, v);
    hi = std::max(hi, v);
  }
  if (!(hi > lo)) hi = lo + 1;  // nothing finite, or everything 0
  Axis y = linear_axis(lo, hi, 0, false);
  y.hi = hi + 0.05 * (hi - lo);
  return y;
}

namespace detail {

/// Rows from the plot's bottom edge to the line of note_skipped's small
/// print: below the tick labels and the x label.
inline int note_row(const std::string& x_label) {
  const int th = Canvas::text_height(kTextScale);
  return kTickLength + 6 + th + (x_label.empty() ? 0 : 8 + th) + 6;
}

/// Places the plot rectangle inside `frame`, leaving room for the title,
/// the y tick labels and label, the x tick labels and label, and a legend
/// of `legend_width` on the right; maps the axes onto it.
inline ChartLayout layout(Rect frame, Axis x, Axis y, const std::string& title, const std::string& x_label,
                          const std::string& y_label, int legend_width, int min_label_width) {
  const int th = Canvas::text_height(kTextScale);
  const int widest = std::max(tick_label_width(y), min_label_width);
  const int left = 8 + (y_label.empty() ? 0 : th + 8) + widest + 6 + kTickLength;
  const int top = 10 + (title.empty() ? 0 : th + 10);
  const int bottom = note_row(x_label) + font::kHeight + 6;  // room for note_skipped's line
  const int right = 16 + (legend_width > 0 ? legend_width + 12 : 0);
  ChartLayout l;
  l.tick_label_width = widest;
  l.plot = {frame.x + left, frame.y + top, frame.width - left - right, frame.height - top - bottom};
  if (l.plot.width < 20 || l.plot.height < 20) {
    throw std::invalid_argument("plot: frame " + std::to_string(frame.width) + " × " + std::to_string(frame.height) +
                                " leaves no room for the plot (need about " + std::to_string(left + right + 20) +
                                " × " + std::to_string(top + bottom + 20) + " pixels)");
  }
  // Values land on pixel centres: lo on the first column / last row inside the frame line.
  x.pixel_lo = l.plot.x + 1;
  x.pixel_hi = l.plot.right() - 2;
  y.pixel_lo = l.plot.bottom() - 2;
  y.pixel_hi = l.plot.y + 1;
  l.x = x;
  l.y = y;
  return l;
}

/// The frame line, ticks, tick labels, title and axis labels of `l`.
inline void draw_axes(Canvas& c, const ChartLayout& l, const std::string& title, const std::string& x_label,
                      const std::string& y_label) {
  const int th = Canvas::text_height(kTextScale);
  c.clear_clip();
  c.outline(l.plot, kBlack);
  for (double t : l.x.ticks()) {
    const int px = static_cast<int>(std::lround(l.x.to_pixel(t)));
    c.line(px, l.plot.bottom(), px, l.plot.bottom() + kTickLength - 1, kBlack);
    const std::string s = l.x.label(t);
    c.text(px - Canvas::text_width(s, kTextScale) / 2, l.plot.bottom() + kTickLength + 6, s, kBlack, kTextScale);
  }
  for (double t : l.y.ticks()) {
    const int py = static_cast<int>(std::lround(l.y.to_pixel(t)));
    c.line(l.plot.x - kTickLength, py, l.plot.x - 1, py, kBlack);
    const std::string s = l.y.label(t);
    c.text(l.plot.x - kTickLength - 6 - Canvas::text_width(s, kTextScale), py - th / 2, s, kBlack, kTextScale);
  }
  if (l.y.log) {
    // Minor ticks at 2..9 × 10^k, as matplotlib's log axes have, where the
    // decades are far enough apart to tell them from the major ones.
    const double decade_px = std::abs(l.y.to_pixel(10 * l.y.lo) - l.y.to_pixel(l.y.lo));
    if (decade_px >= 40) {
      for (double d = l.y.lo; d < l.y.hi; d *= 10) {
        for (int m = 2; m <= 9; ++m) {
          const int py = static_cast<int>(std::lround(l.y.to_pixel(m * d)));
          c.line(l.plot.x - kTickLength / 2 - 1, py, l.plot.x - 1, py, kBlack);
        }
      }
    }
  }
  if (!title.empty()) {
    c.text(l.plot.x + (l.plot.width - Canvas::text_width(title, kTextScale)) / 2, l.plot.y - 10 - th, title, kBlack,
           kTextScale);
  }
  if (!x_label.empty()) {
    c.text(l.plot.x + (l.plot.width - Canvas::text_width(x_label, kTextScale)) / 2,
           l.plot.bottom() + kTickLength + 6 + th + 8, x_label, kBlack, kTextScale);
  }
  if (!y_label.empty()) {
    const int x = l.plot.x - kTickLength - 6 - l.tick_label_width - 8 - th;
    c.text_up(x, l.plot.y + (l.plot.height + Canvas::text_width(y_label, kTextScale)) / 2, y_label, kBlack,
              kTextScale);
  }
}

/// "N values ... not drawn" in small print under the plot's right corner.
inline void note_skipped(Canvas& c, const ChartLayout& l, const std::string& x_label, const char* why) {
  if (l.skipped == 0) return;
  const std::string s = std::to_string(l.skipped) + (l.skipped == 1 ? " value " : " values ") + why + ": not drawn";
  c.clear_clip();
  c.text(l.plot.right() - Canvas::text_width(s, 1), l.plot.bottom() + note_row(x_label), s, kGrey, 1);
}

}  // namespace detail

/// Draws `chart` inside `frame` of `c`. Throws std::invalid_argument when a
/// series' x and y differ in length, or the frame is too small for the axes.
inline ChartLayout draw_line_chart(Canvas& c, Rect frame, const LineChart& chart) {
  double x_min = kInf, x_max = -kInf, y_min = kInf, y_max = -kInf;
  int legend_width = 0;
  for (std::size_t s = 0; s < chart.series.size(); ++s) {
    const Series& se = chart.series[s];
    if (se.x.size() != se.y.size()) {
      throw std::invalid_argument("plot::draw_line_chart: series " + std::to_string(s) + " ('" + se.label + "') has " +
                                  std::to_string(se.x.size()) + " x values but " + std::to_string(se.y.size()) +
                                  " y values");
    }
    for (std::size_t i = 0; i < se.x.size(); ++i) {
      if (!std::isfinite(se.x[i]) || !std::isfinite(se.y[i]) || (chart.log_y && !(se.y[i] > 0))) continue;
      x_min = std::min(x_min, se.x[i]);
      x_max = std::max(x_max, se.x[i]);
      y_min = std::min(y_min, se.y[i]);
      y_max = std::max(y_max, se.y[i]);
    }
    if (!se.label.empty()) legend_width = std::max(legend_width, Canvas::text_width(se.label, kTextScale));
  }
  if (legend_width > 0) legend_width += 12 + 36 + 8 + 12;  // padding, sample line, gap, padding
  const Axis x = linear_axis(x_min, x_max, 0.04, chart.integer_x);
  const Axis y = chart.log_y ? log_axis(y_min, y_max) : linear_axis(y_min, y_max, 0.05, false);
  ChartLayout l =
      detail::layout(frame, x, y, chart.title, chart.x_label, chart.y_label, legend_width, chart.tick_label_width);

  c.set_clip({l.plot.x + 1, l.plot.y + 1, l.plot.width - 2, l.plot.height - 2});
  for (const Series& se : chart.series) {
    bool have_previous = false;
    double px0 = 0, py0 = 0;
    for (std::size_t i = 0; i < se.x.size(); ++i) {
      if (!l.x.placeable(se.x[i]) || !l.y.placeable(se.y[i])) {
        ++l.skipped;
        have_previous = false;  // the line breaks here
        continue;
      }
      const double px = l.x.to_pixel(se.x[i]), py = l.y.to_pixel(se.y[i]);
      if (se.line && have_previous) c.line(px0, py0, px, py, se.color, 2);
      px0 = px;
      py0 = py;
      have_previous = true;
    }
    // Markers over the lines.
    for (std::size_t i = 0; i < se.x.size(); ++i) {
      if (l.x.placeable(se.x[i]) && l.y.placeable(se.y[i])) {
        c.marker(l.x.to_pixel(se.x[i]), l.y.to_pixel(se.y[i]), se.marker, se.color, kMarkerRadius);
      }
    }
  }
  detail::draw_axes(c, l, chart.title, chart.x_label, chart.y_label);
  detail::note_skipped(c, l, chart.x_label, chart.log_y ? "<= 0 or not finite" : "not finite");

  if (legend_width > 0) {
    const int th = Canvas::text_height(kTextScale);
    int entries = 0;
    for (const Series& se : chart.series) entries += se.label.empty() ? 0 : 1;
    const Rect box{l.plot.right() + 12, l.plot.y, legend_width, 10 + entries * (th + 10)};
    c.fill(box, kWhite);
    c.outline(box, kGrey);
    int row = box.y + 10;
    for (const Series& se : chart.series) {
      if (se.label.empty()) continue;
      const int mid = row + th / 2;
      if (se.line) c.line(box.x + 12, mid, box.x + 12 + 35, mid, se.color, 2);
      c.marker(box.x + 12 + 18, mid, se.marker, se.color, kMarkerRadius);
      c.text(box.x + 12 + 36 + 8, row, se.label, kBlack, kTextScale);
      row += th + 10;
    }
  }
  return l;
}

/// Draws `chart` inside `frame` of `c`: value i as a bar over
/// [i - 0.5, i + 0.5], from 0. Where there are more values than pixel
/// columns, each column shows the largest (and the most negative) value of
/// the bars it covers, so a single outlier channel among thousands stays
/// visible. Throws std::invalid_argument when the frame is too small.
inline ChartLayout draw_bar_chart(Canvas& c, Rect frame, const BarChart& chart) {
  const std::size_t n = chart.values.size();
  const Axis y = bar_value_axis(chart.values);
  Axis x = linear_axis(-0.5, n == 0 ? 0.5 : static_cast<double>(n) - 0.5, 0, true);
  x.step = n <= 1 ? 1 : std::max(1.0, nice_step(static_cast<double>(n) / 6));
  ChartLayout l = detail::layout(frame, x, y, chart.title, chart.x_label, chart.y_label, 0, chart.tick_label_width);

  // Per pixel column the extreme values of the bars over it.
  const int columns = l.plot.width;
  std::vector<double> top(static_cast<std::size_t>(columns), -kInf), low(static_cast<std::size_t>(columns), kInf);
  for (std::size_t i = 0; i < n; ++i) {
    const double v = chart.values[i];
    if (!std::isfinite(v)) {
      ++l.skipped;
      continue;
    }
    const double a = l.x.to_pixel(static_cast<double>(i) - 0.5), b = l.x.to_pixel(static_cast<double>(i) + 0.5);
    // Bar i covers the pixel columns from round(a) up to round(b) - 1, so
    // neighbours neither overlap nor leave a gap; a bar narrower than that
    // lands in the column of its centre.
    int c0 = static_cast<int>(std::lround(a)) - l.plot.x;
    int c1 = static_cast<int>(std::lround(b)) - 1 - l.plot.x;
    if (c1 < c0) c0 = c1 = static_cast<int>(std::lround(l.x.to_pixel(static_cast<double>(i)))) - l.plot.x;
    for (int k = std::max(c0, 0); k <= std::min(c1, columns - 1); ++k) {
      top[static_cast<std::size_t>(k)] = std::max(top[static_cast<std::size_t>(k)], v);
      low[static_cast<std::size_t>(k)] = std::min(low[static_cast<std::size_t>(k)], v);
    }
  }
  c.set_clip({l.plot.x + 1, l.plot.y + 1, l.plot.width - 2, l.plot.height - 2});
  const double zero = l.y.to_pixel(0);
  for (int k = 0; k < columns; ++k) {
    if (top[static_cast<std::size_t>(k)] == -kInf) continue;
    const double t = l.y.to_pixel(std::max(top[static_cast<std::size_t>(k)], 0.0));
    const double b = l.y.to_pixel(std::min(low[static_cast<std::size_t>(k)], 0.0));
    c.line(l.plot.x + k, std::min(t, zero), l.plot.x + k, std::max(b, zero), chart.color);
  }
  detail::draw_axes(c, l, chart.title, chart.x_label, chart.y_label);
  detail::note_skipped(c, l, chart.x_label, "not finite");
  return l;
}

}  // namespace oq_tool::plot
