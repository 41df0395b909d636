// GPU test (label `gpu`): the per-token quantization kernel against the host
// quantizers — bit for bit without rotation, and to the rounding of X·R with.
#include "quantize_per_token_launch.hpp"

#include <oq/hadamard.hpp>
#include <oq/quant.hpp>

#include <Eigen/QR>

#include <doctest/doctest.h>

#include "support/matrices.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <exception>
#include <string>
#include <thread>
#include <utility>

using namespace oq::quant;
using oq::test::DeviceInput;
using oq::test::PerTokenArgs;
using RowMatrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

namespace {

PerTokenArgs args_for(Eigen::Index rows, Eigen::Index cols, int bits, bool symmetric, float clip) {
  PerTokenArgs a;
  a.rows = rows;
  a.cols = cols;
  a.ld_x = cols;
  a.ld_codes = cols * bits / 8;
  a.bits = bits;
  a.symmetric = symmetric;
  a.clip_ratio = clip;
  return a;
}

// Host codes as the bytes the kernel writes.
std::vector<std::uint8_t> host_bytes(const RowMatrix& x, const QuantSpec& spec, QuantParams<float>& params) {
  params = compute_params(x, spec);
  const auto codes = quantize(x, params, spec);
  std::vector<std::uint8_t> bytes;
  if (spec.bits == 4) {
    const PackedInt4 packed = pack_int4(codes, spec.symmetric ? Int4Kind::kSigned : Int4Kind::kUnsigned);
    bytes.assign(packed.data(), packed.data() + packed.size());
  } else {
    for (Eigen::Index i = 0; i < codes.size(); ++i) bytes.push_back(static_cast<std::uint8_t>(codes.data()[i]));
  }
  return bytes;
}

RowMatrix adversarial_rows(Eigen::Index rows, Eigen::Index cols, std::uint64_t seed) {
  return oq::test::adversarial<float>(rows, cols, seed);
}

}  // namespace

TEST_CASE("without rotation the kernel equals oq::quant bit for bit") {
  for (Eigen::Index rows : {1, 3, 257}) {
    for (Eigen::Index cols : {2, 130, 4096}) {
      for (int bits : {4, 8}) {
        for (bool symmetric : {false, true}) {
          CAPTURE(rows);
          CAPTURE(cols);
          CAPTURE(bits);
          CAPTURE(symmetric);
          const RowMatrix x = adversarial_rows(rows, cols, static_cast<std::uint64_t>(rows * cols + bits));
          const std::vector<float> flat(x.data(), x.data() + x.size());
          const PerTokenArgs a = args_for(rows, cols, bits, symmetric, 0.9f);
          // Both loads and both stores are exercised: 16-byte loads of 4 floats,
          // 32-bit words of 8 INT4 or 4 INT8 codes, where cols allows.
          const auto [wide_in, wide_out] = oq::test::per_token_wide_paths(a, DeviceInput::kFloat);
          CHECK(wide_in == (cols % 4 == 0));
          CHECK(wide_out == (cols % (32 / bits) == 0));
          const auto got = oq::test::quantize_per_token_on_device(flat, a, DeviceInput::kFloat, {});
          QuantParams<float> params;
          const auto expected = host_bytes(x, QuantSpec::per_token(bits, symmetric, 0.9), params);
          CHECK(got.codes == expected);
          for (Eigen::Index r = 0; r < rows; ++r) {
            CHECK(got.scales[static_cast<std::size_t>(r)] == params.scale(r, 0));
            CHECK(got.zeros[static_cast<std::size_t>(r)] == params.zero(r, 0));
          }
          const auto codes = quantize(x, params, QuantSpec::per_token(bits, symmetric, 0.9));
          for (Eigen::Index r = 0; r < rows; ++r) CHECK(got.sums[static_cast<std::size_t>(r)] == codes.row(r).sum());
        }
      }
    }
  }
}

TEST_CASE("16-bit rows held in registers quantize as the host does, bit for bit") {
  // The register path (no rotation, 16-byte loads, K ≤ 16,384 at 256
  // threads), on each of its kernels — at most 1, 2, 4 or 8 chunks per
  // thread: K = 8 (a single chunk: one thread busy), 4096, 8192, the issue's
  // 11008 (a ragged last round of chunks) and 16,384 — and one past it (the
  // staged path). Rows padded by 8 elements (16 bytes: still aligned).
  for (Eigen::Index cols : {8, 4096, 8192, 11008, 16384, 16392}) {
    for (DeviceInput input : {DeviceInput::kHalf, DeviceInput::kBf16}) {
      for (int bits : {4, 8}) {
        for (bool symmetric : {false, true}) {
          CAPTURE(cols);
          CAPTURE(static_cast<int>(input));
          CAPTURE(bits);
          CAPTURE(symmetric);
          const Eigen::Index rows = 7, ld_x = cols + 8;
          const RowMatrix x = adversarial_rows(rows, cols, static_cast<std::uint64_t>(cols + bits));
          std::vector<float> flat(static_cast<std::size_t>(rows * ld_x), 0.0f);
          for (Eigen::Index r = 0; r < rows; ++r)
            for (Eigen::Index k = 0; k < cols; ++k) flat[static_cast<std::size_t>(r * ld_x + k)] = x(r, k);
          PerTokenArgs a = args_for(rows, cols, bits, symmetric, 0.9f);
          a.ld_x = ld_x;
          CHECK(oq::test::per_token_register_path(a, input) == (cols <= 16384));
          const auto got = oq::test::quantize_per_token_on_device(flat, a, input, {});
          RowMatrix rounded(rows, cols);
          for (Eigen::Index r = 0; r < rows; ++r)
            for (Eigen::Index k = 0; k < cols; ++k)
              rounded(r, k) = got.x_as_input[static_cast<std::size_t>(r * ld_x + k)];
          QuantParams<float> params;
          const QuantSpec spec = QuantSpec::per_token(bits, symmetric, 0.9);
          CHECK(got.codes == host_bytes(rounded, spec, params));
          const auto codes = quantize(rounded, params, spec);
          for (Eigen::Index r = 0; r < rows; ++r) {
            CHECK(got.scales[static_cast<std::size_t>(r)] == params.scale(r, 0));
            CHECK(got.zeros[static_cast<std::size_t>(r)] == params.zero(r, 0));
            CHECK(got.sums[static_cast<std::size_t>(r)] == codes.row(r).sum());
          }
        }
      }
    }
  }
}

TEST_CASE("the Walsh-Hadamard transform in registers equals the staged one bit for bit") {
  // 16-bit rows take the register path (butterflies inside chunks, then
  // between lanes); the same values as float rows take the staged path
  // (shared memory): the same butterflies in the same order, so every code,
  // scale, zero point and sum must agree exactly. Blocks from 2 to 256 (all
  // levels inside a chunk up to 8; one shuffle level at 16, four at 128), on
  // each register kernel (1, 2, 4, 8 chunks per thread), both bit widths and
  // signednesses.
  for (const int b : {2, 4, 8, 16, 64, 128, 256}) {
    for (const Eigen::Index cols : {Eigen::Index{256}, Eigen::Index{4096}, Eigen::Index{8192}, Eigen::Index{11008}}) {
      for (DeviceInput input : {DeviceInput::kHalf, DeviceInput::kBf16}) {
        for (const auto& [bits, symmetric] : {std::pair{4, false}, std::pair{4, true}, std::pair{8, false},
                                              std::pair{8, true}}) {
          CAPTURE(b);
          CAPTURE(cols);
          CAPTURE(static_cast<int>(input));
          CAPTURE(bits);
          CAPTURE(symmetric);
          const Eigen::Index rows = 5;
          const RowMatrix x = adversarial_rows(rows, cols, static_cast<std::uint64_t>(cols + b));
          const std::vector<float> flat(x.data(), x.data() + x.size());
          PerTokenArgs a = args_for(rows, cols, bits, symmetric, 0.9f);
          a.hadamard_block = b;
          CHECK(oq::test::per_token_register_path(a, input));
          CHECK_FALSE(oq::test::per_token_register_path(a, DeviceInput::kFloat));
          const auto registers = oq::test::quantize_per_token_on_device(flat, a, input, {});
          const auto staged = oq::test::quantize_per_token_on_device(registers.x_as_input, a, DeviceInput::kFloat, {});
          CHECK(registers.codes == staged.codes);
          CHECK(registers.scales == staged.scales);
          CHECK(registers.zeros == staged.zeros);
          CHECK(registers.sums == staged.sums);
        }
      }
    }
  }
}

TEST_CASE("half and bfloat16 inputs quantize as their float values") {
  // Rows in registers (512), and staged element by element (130).
  for (Eigen::Index cols : {512, 130}) {
    const RowMatrix x = adversarial_rows(17, cols, 5);
    const std::vector<float> flat(x.data(), x.data() + x.size());
    for (DeviceInput input : {DeviceInput::kHalf, DeviceInput::kBf16}) {
      CAPTURE(cols);
      const PerTokenArgs a = args_for(17, cols, 4, false, 0.9f);
      CHECK(oq::test::per_token_wide_paths(a, input).first == (cols % 8 == 0));
      const auto got = oq::test::quantize_per_token_on_device(flat, a, input, {});
      const RowMatrix rounded = Eigen::Map<const RowMatrix>(got.x_as_input.data(), 17, cols);
      QuantParams<float> params;
      CHECK(got.codes == host_bytes(rounded, QuantSpec::per_token(4, false, 0.9), params));
    }
  }
}

namespace {

// The kernel's codes and scales for X·M against the host quantizer on the
// float64 product `rotated`: the kernel's float arithmetic and the float64
// reference differ by a few ulp, so scales agree to ~1e-6 and a code may sit
// one step over when x/s is near a tie.
void check_rotated(const oq::test::PerTokenResult& got, const RowMatrix& rotated) {
  const Eigen::Index rows = rotated.rows(), cols = rotated.cols();
  const QuantSpec spec = QuantSpec::per_token(4, false, 0.9);
  const auto params = compute_params(rotated, spec);
  const auto codes = quantize(rotated, params, spec);
  int off_by_one = 0;
  for (Eigen::Index m = 0; m < rows; ++m) {
    CHECK(got.scales[static_cast<std::size_t>(m)] == doctest::Approx(params.scale(m, 0)).epsilon(1e-5).scale(0));
    for (Eigen::Index k = 0; k < cols; ++k) {
      const std::uint8_t byte = got.codes[static_cast<std::size_t>(m * cols / 2 + k / 2)];
      const int code = k % 2 == 0 ? (byte & 0xF) : (byte >> 4);
      const int diff = std::abs(code - codes(m, k));
      CHECK(diff <= 1);
      off_by_one += diff;
    }
  }
  CHECK(off_by_one < rows * cols / 100);
}

}  // namespace

TEST_CASE("host threads launching rows of different lengths at once all succeed, bit for bit") {
  // One kernel instantiation (float rows, staged in shared memory) launched
  // from two host threads with 4 KiB and 80 KiB of dynamic shared memory. Its
  // shared memory limit is a kernel attribute: set to each call's own size,
  // the small row's launcher would lower it between the large row's set and
  // launch (allow_dynamic_shared_memory, status.cuh).
  const Eigen::Index rows = 5;
  const Eigen::Index lengths[2] = {1024, 20480};
  std::vector<float> inputs[2];
  PerTokenArgs args[2];
  oq::test::PerTokenResult expected[2];
  for (int t = 0; t < 2; ++t) {
    const RowMatrix x = adversarial_rows(rows, lengths[t], 60 + static_cast<std::uint64_t>(t));
    inputs[t].assign(x.data(), x.data() + x.size());
    args[t] = args_for(rows, lengths[t], 4, false, 0.9f);
    expected[t] = oq::test::quantize_per_token_on_device(inputs[t], args[t], DeviceInput::kFloat, {});
  }
  std::string failures[2];
  int mismatches[2] = {0, 0};
  auto work = [&](int t) {
    try {
      for (int i = 0; i < 100; ++i) {
        const auto got = oq::test::quantize_per_token_on_device(inputs[t], args[t], DeviceInput::kFloat, {});
        if (got.codes != expected[t].codes || got.scales != expected[t].scales) ++mismatches[t];
      }
    } catch (const std::exception& e) {
      failures[t] = e.what();
    }
  };
  std::thread small(work, 0), large(work, 1);
  small.join();
  large.join();
  for (int t = 0; t < 2; ++t) {
    CAPTURE(lengths[t]);
    CHECK(failures[t] == "");
    CHECK(mismatches[t] == 0);
  }
  // The race above needs an unlucky interleaving; this does not. The large
  // row launched last, then the small one: the limit must still allow the
  // large row (set to each launch's own size, it would now be the small one's).
  (void)oq::test::quantize_per_token_on_device(inputs[1], args[1], DeviceInput::kFloat, {});
  (void)oq::test::quantize_per_token_on_device(inputs[0], args[0], DeviceInput::kFloat, {});
  const auto [small_bytes, limit_after_small] = oq::test::per_token_staged_shared_memory(args[0]);
  const auto [large_bytes, limit] = oq::test::per_token_staged_shared_memory(args[1]);
  CHECK(small_bytes < large_bytes);
  CHECK(large_bytes > 48 * 1024);  // beyond the default limit: the attribute is needed at all
  CHECK(limit_after_small == limit);
  CHECK(static_cast<std::size_t>(limit) >= large_bytes);
}

TEST_CASE("with a fused block rotation the kernel quantizes X·R") {
  const Eigen::Index rows = 33, cols = 512, b = 128;
  const RowMatrix x = adversarial_rows(rows, cols, 9);
  const Eigen::MatrixXd q = Eigen::HouseholderQR<Eigen::MatrixXd>(oq::test::gaussian<double>(b, b, 3)).householderQ();
  const RowMatrix r = q.cast<float>();
  RowMatrix rotated(rows, cols);
  for (Eigen::Index k = 0; k < cols / b; ++k)
    rotated.middleCols(k * b, b) = (x.middleCols(k * b, b).cast<double>() * r.cast<double>()).cast<float>();
  PerTokenArgs a = args_for(rows, cols, 4, false, 0.9f);
  a.block_size = static_cast<int>(b);
  const std::vector<float> flat(x.data(), x.data() + x.size());
  const std::vector<float> rot(r.data(), r.data() + r.size());
  check_rotated(oq::test::quantize_per_token_on_device(flat, a, DeviceInput::kFloat, rot), rotated);
}

TEST_CASE("with a fused Walsh-Hadamard transform the kernel quantizes X·(H_b/sqrt(b)) per block") {
  struct Case {
    Eigen::Index rows, cols, b;
  };
  // One block; three blocks of the QuaRot size; many small ones; the smallest
  // (with rows past the adversarial set's zero and constant ones, so that the
  // butterflies' differences are not all zero).
  for (const Case& c : {Case{5, 128, 128}, Case{33, 384, 128}, Case{9, 4096, 64}, Case{7, 130, 2}}) {
    CAPTURE(c.cols);
    CAPTURE(c.b);
    const RowMatrix x = adversarial_rows(c.rows, c.cols, static_cast<std::uint64_t>(c.cols + c.b));
    const Eigen::MatrixXd h = oq::transform::hadamard_matrix(c.b).cast<double>() / std::sqrt(double(c.b));
    REQUIRE((h * h.transpose() - Eigen::MatrixXd::Identity(c.b, c.b)).cwiseAbs().maxCoeff() < 1e-12);
    RowMatrix rotated(c.rows, c.cols);
    for (Eigen::Index k = 0; k < c.cols / c.b; ++k)
      rotated.middleCols(k * c.b, c.b) = (x.middleCols(k * c.b, c.b).cast<double>() * h).cast<float>();
    PerTokenArgs a = args_for(c.rows, c.cols, 4, false, 0.9f);
    a.hadamard_block = static_cast<int>(c.b);
    const std::vector<float> flat(x.data(), x.data() + x.size());
    check_rotated(oq::test::quantize_per_token_on_device(flat, a, DeviceInput::kFloat, {}), rotated);
  }
}

// ---- device::QuantizePerTokenTensorOp: the rotation on tensor cores ----

namespace {

// The kernel's outputs for X·M against the host quantizer on the float64
// product `rotated` (of X as the kernel read it): scales to 1e-5 and zero
// points within one of the host's; every code within one step of
// clamp(round(y/s) + z) with the kernel's own s and z (so that a zero point
// rounded the other way does not shift a whole row), fewer than 1% one step
// off (ties of y/s); code_sums equal to the sums of the codes written.
void check_rotated_codes(const oq::test::PerTokenResult& got, const RowMatrix& rotated, const QuantSpec& spec,
                         std::int64_t ld_codes) {
  const Eigen::Index rows = rotated.rows(), cols = rotated.cols();
  const auto params = compute_params(rotated, spec);
  const double lo = spec.symmetric ? -(1 << (spec.bits - 1)) : 0;
  const double hi = spec.symmetric ? (1 << (spec.bits - 1)) - 1 : (1 << spec.bits) - 1;
  int off_by_one = 0;
  for (Eigen::Index m = 0; m < rows; ++m) {
    CAPTURE(m);
    const auto row = static_cast<std::size_t>(m);
    const double scale = got.scales[row], zero = got.zeros[row];
    CHECK(scale == doctest::Approx(params.scale(m, 0)).epsilon(1e-5).scale(0));
    CHECK(std::abs(zero - params.zero(m, 0)) <= 1.0);
    long sum = 0;
    for (Eigen::Index k = 0; k < cols; ++k) {
      int code = 0;
      if (spec.bits == 4) {
        const std::uint8_t byte = got.codes[row * static_cast<std::size_t>(ld_codes) + static_cast<std::size_t>(k / 2)];
        const int nibble = k % 2 == 0 ? (byte & 0xF) : (byte >> 4);
        code = spec.symmetric && nibble >= 8 ? nibble - 16 : nibble;
      } else {
        const std::uint8_t byte = got.codes[row * static_cast<std::size_t>(ld_codes) + static_cast<std::size_t>(k)];
        code = spec.symmetric ? static_cast<std::int8_t>(byte) : byte;
      }
      sum += code;
      const double expected = std::clamp(std::nearbyint(rotated(m, k) / scale) + zero, lo, hi);
      const int diff = static_cast<int>(std::abs(code - expected));
      CHECK(diff <= 1);
      off_by_one += diff;
    }
    CHECK(got.sums[row] == sum);
  }
  CHECK(off_by_one < rows * cols / 100);
}

// X (as the kernel read it) times diag(M, …, M), in float64.
RowMatrix block_product(const std::vector<float>& x_as_input, Eigen::Index rows, Eigen::Index cols,
                        const Eigen::MatrixXd& m) {
  const Eigen::Index b = m.rows();
  const Eigen::MatrixXd x =
      Eigen::Map<const RowMatrix>(x_as_input.data(), rows, cols).cast<double>();
  RowMatrix out(rows, cols);
  for (Eigen::Index k = 0; k < cols / b; ++k) out.middleCols(k * b, b) = (x.middleCols(k * b, b) * m).cast<float>();
  return out;
}

}  // namespace

TEST_CASE("on tensor cores the kernel quantizes X·R as the CUDA-core path does") {
  struct Case {
    Eigen::Index rows, cols, ld_x;
    int bits;
    bool symmetric;
    DeviceInput input;
    oq::test::TensorOpConfig config;
  };
  // bf16, b = 128, two terms: rows not a multiple of the 8-token tile; then
  // 275 tiles × 16 stages: more tiles than an H100/H200's persistent grid has
  // CTAs (2 per SM, 264; so that CTAs loop, and kResidentY prefetches the next tile
  // during pass 2) and more stages than kResidentY's ring has slots and
  // kRecompute issues ahead (so that slots are refilled and copies issued
  // inside the loop). fp16, b = 64, two warp groups: an odd number of blocks
  // (the last stage half empty), padded rows, symmetric 8-bit codes. Each
  // with both passes; then K = 8192, whose fp32 Y exceeds one CTA's shared
  // memory, with run()'s choice (kResidentYPair on sm_90, else kRecompute).
  for (const Case& c : {Case{33, 512, 512, 4, false, DeviceInput::kBf16, {128, 2, 1, 1}},
                        Case{33, 512, 512, 4, false, DeviceInput::kBf16, {128, 2, 1, 2}},
                        Case{2200, 2048, 2048, 4, true, DeviceInput::kBf16, {128, 2, 1, 1}},
                        Case{2200, 2048, 2048, 4, true, DeviceInput::kBf16, {128, 2, 1, 2}},
                        Case{17, 320, 328, 8, true, DeviceInput::kHalf, {64, 2, 2, 1}},
                        Case{17, 320, 328, 8, true, DeviceInput::kHalf, {64, 2, 2, 2}},
                        // More stages than the ring has slots at b = 64: 16
                        // stages of two groups against 8 slots, and (one
                        // group, the deepest ring) 32 against 16.
                        Case{300, 2048, 2048, 4, true, DeviceInput::kHalf, {64, 2, 2, 1}},
                        Case{300, 2048, 2048, 4, false, DeviceInput::kHalf, {64, 2, 1, 1}},
                        Case{9, 8192, 8192, 4, false, DeviceInput::kBf16, {128, 2, 1, 0}},
                        // kResidentYPair (sm_90) on the same layouts: padded
                        // rows, 8-bit symmetric codes, two warp groups, ranks
                        // of 3 and 2 blocks (the last stage half empty).
                        Case{33, 512, 512, 4, false, DeviceInput::kBf16, {128, 2, 1, 3}},
                        Case{17, 320, 328, 8, true, DeviceInput::kHalf, {64, 2, 2, 3}}}) {
    CAPTURE(c.rows);
    CAPTURE(c.cols);
    CAPTURE(c.config.passes);
    if (c.config.passes == 3 && !oq::test::device_has_clusters()) continue;  // the pair needs sm_90
    const Eigen::Index b = c.config.block;
    const RowMatrix x = adversarial_rows(c.rows, c.cols, static_cast<std::uint64_t>(c.rows + c.cols));
    const Eigen::MatrixXd q = Eigen::HouseholderQR<Eigen::MatrixXd>(oq::test::gaussian<double>(b, b, 5)).householderQ();
    const RowMatrix r = q.cast<float>();
    std::vector<float> flat(static_cast<std::size_t>(c.rows * c.ld_x), 0.0f);
    for (Eigen::Index m = 0; m < c.rows; ++m)
      for (Eigen::Index k = 0; k < c.cols; ++k) flat[static_cast<std::size_t>(m * c.ld_x + k)] = x(m, k);
    PerTokenArgs a = args_for(c.rows, c.cols, c.bits, c.symmetric, 0.9f);
    a.ld_x = c.ld_x;
    a.block_size = static_cast<int>(b);
    const std::vector<float> rot(r.data(), r.data() + r.size());
    const auto got = oq::test::quantize_per_token_tensorop_on_device(flat, a, c.input, rot, c.config);
    std::vector<float> x_read(static_cast<std::size_t>(c.rows * c.cols));
    for (Eigen::Index m = 0; m < c.rows; ++m)
      for (Eigen::Index k = 0; k < c.cols; ++k)
        x_read[static_cast<std::size_t>(m * c.cols + k)] = got.x_as_input[static_cast<std::size_t>(m * c.ld_x + k)];
    check_rotated_codes(got, block_product(x_read, c.rows, c.cols, r.cast<double>()),
                        QuantSpec::per_token(c.bits, c.symmetric, 0.9), a.ld_codes);
  }
}

TEST_CASE("on tensor cores with the row split over a cluster of two CTAs (sm_90)") {
  if (!oq::test::device_has_clusters()) {
    MESSAGE("skipped: kResidentYPair needs thread-block clusters (compute capability 9.0)");
    return;
  }
  struct Case {
    Eigen::Index rows, cols;
    int passes;
  };
  // One block (rank 1 holds none), three (2 + 1), 16 over 275 tiles (CTA pairs
  // loop over tiles; 8 stages per rank, as many as the ring's slots, so
  // the ring wraps only across tiles), 64 over 275 tiles (32 stages per rank:
  // the ring refills within a tile); and K = 11008, whose fp32 Y fits only
  // split, with run()'s choice — which must be the pair here.
  for (const Case& c : {Case{17, 128, 3}, Case{33, 384, 3}, Case{2200, 2048, 3}, Case{300, 8192, 3},
                        Case{9, 11008, 0}}) {
    CAPTURE(c.rows);
    CAPTURE(c.cols);
    const Eigen::Index b = 128;
    const RowMatrix x = adversarial_rows(c.rows, c.cols, static_cast<std::uint64_t>(c.rows * 3 + c.cols));
    const Eigen::MatrixXd q = Eigen::HouseholderQR<Eigen::MatrixXd>(oq::test::gaussian<double>(b, b, 8)).householderQ();
    const RowMatrix r = q.cast<float>();
    PerTokenArgs a = args_for(c.rows, c.cols, 4, false, 0.9f);
    a.block_size = static_cast<int>(b);
    if (c.passes == 0) CHECK(oq::test::tensorop_chosen_passes(a, {128, 2, 1}) == 3);
    const std::vector<float> flat(x.data(), x.data() + x.size());
    const std::vector<float> rot(r.data(), r.data() + r.size());
    const auto got = oq::test::quantize_per_token_tensorop_on_device(flat, a, DeviceInput::kBf16, rot, {128, 2, 1, c.passes});
    check_rotated_codes(got, block_product(got.x_as_input, c.rows, c.cols, r.cast<double>()),
                        QuantSpec::per_token(4, false, 0.9), a.ld_codes);
  }
}

TEST_CASE("on tensor cores with one term the kernel quantizes X·round(R)") {
  // kTerms = 1 multiplies by R rounded to bf16 (2^-9 off R): against that
  // matrix it agrees as the two-term path agrees with R.
  const Eigen::Index rows = 41, cols = 384, b = 128;  // three blocks over two warp groups
  const RowMatrix x = adversarial_rows(rows, cols, 23);
  const Eigen::MatrixXd q = Eigen::HouseholderQR<Eigen::MatrixXd>(oq::test::gaussian<double>(b, b, 6)).householderQ();
  const RowMatrix r = q.cast<float>();
  PerTokenArgs a = args_for(rows, cols, 4, false, 1.0f);
  a.block_size = static_cast<int>(b);
  const std::vector<float> flat(x.data(), x.data() + x.size());
  const std::vector<float> rot(r.data(), r.data() + r.size());
  // round(R) through the replay helper's rounding (the same as the kernel's operand).
  const auto rounded = oq::test::replay_tensorop_rotation(std::vector<float>(8 * b, 0.0f), rot, static_cast<int>(b), 1,
                                                          DeviceInput::kBf16)
                           .r_as_input;
  const Eigen::MatrixXd r_rounded = Eigen::Map<const RowMatrix>(rounded.data(), b, b).cast<double>();
  CHECK((r_rounded - r.cast<double>()).cwiseAbs().maxCoeff() > 1e-5);  // the rounding is real
  for (const int passes : {1, 2}) {
    CAPTURE(passes);
    const auto got =
        oq::test::quantize_per_token_tensorop_on_device(flat, a, DeviceInput::kBf16, rot, {128, 1, 2, passes});
    check_rotated_codes(got, block_product(got.x_as_input, rows, cols, r_rounded), QuantSpec::per_token(4, false, 1.0),
                        a.ld_codes);
  }
}
