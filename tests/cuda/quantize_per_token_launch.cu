#include "quantize_per_token_launch.hpp"

#include <oq/cuda/device/quantize_per_token.cuh>
#include <oq/cuda/device/quantize_per_token_tensorop.cuh>
#include <oq/cuda/numeric.cuh>

#include "support/device_buffer.cuh"

#include <cstring>
#include <stdexcept>
#include <string>
#include <type_traits>

namespace {

using oq::test::DeviceBuffer;

using oq::test::check_cuda;

template <class Element>
oq::cuda::kernel::QuantizePerTokenParams<Element> params_of(const oq::test::PerTokenArgs& a) {
  oq::cuda::kernel::QuantizePerTokenParams<Element> p;
  p.rows = a.rows;
  p.cols = a.cols;
  p.ld_x = a.ld_x;
  p.ld_codes = a.ld_codes;
  p.bits = a.bits;
  p.symmetric = a.symmetric;
  p.clip_ratio = a.clip_ratio;
  p.block_size = a.block_size;
  p.hadamard_block = a.hadamard_block;
  return p;
}

// Runs `launch` (Report(const Params&)) on device copies of x and the rotation.
template <class Element, class Launch>
oq::test::PerTokenResult run_with(const std::vector<float>& x, const oq::test::PerTokenArgs& a,
                                  const std::vector<float>& rotation, Launch launch) {
  oq::test::PerTokenResult result;
  std::vector<Element> host(x.size());
  result.x_as_input.resize(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) {
    host[i] = oq::cuda::from_float<Element>(x[i]);
    result.x_as_input[i] = oq::cuda::to_float(host[i]);
  }
  const auto rows = static_cast<std::size_t>(a.rows);
  DeviceBuffer<Element> d_x(host.size());
  DeviceBuffer<std::uint8_t> d_codes(rows * static_cast<std::size_t>(a.ld_codes));
  DeviceBuffer<float> d_scales(rows), d_zeros(rows), d_rotation(rotation.size());
  DeviceBuffer<std::int32_t> d_sums(rows);
  check_cuda(cudaMemcpy(d_x.ptr, host.data(), host.size() * sizeof(Element), cudaMemcpyHostToDevice), "cudaMemcpy x");
  if (!rotation.empty())
    check_cuda(cudaMemcpy(d_rotation.ptr, rotation.data(), rotation.size() * sizeof(float), cudaMemcpyHostToDevice),
          "cudaMemcpy rotation");
  check_cuda(cudaMemset(d_codes.ptr, 0xAB, rows * static_cast<std::size_t>(a.ld_codes)), "cudaMemset");
  check_cuda(cudaMemset(d_scales.ptr, 0xAB, rows * sizeof(float)), "cudaMemset");
  check_cuda(cudaMemset(d_zeros.ptr, 0xAB, rows * sizeof(float)), "cudaMemset");
  check_cuda(cudaMemset(d_sums.ptr, 0xAB, rows * sizeof(std::int32_t)), "cudaMemset");

  auto p = params_of<Element>(a);
  p.x = d_x.ptr;
  p.codes = d_codes.ptr;
  p.scales = d_scales.ptr;
  p.zeros = d_zeros.ptr;
  p.code_sums = d_sums.ptr;
  p.rotation = rotation.empty() ? nullptr : d_rotation.ptr;
  const oq::cuda::Report report = launch(p);
  if (!report.ok()) throw std::runtime_error(report.message);
  check_cuda(cudaDeviceSynchronize(), "the per-token quantization kernel");

  result.codes.resize(rows * static_cast<std::size_t>(a.ld_codes));
  result.scales.resize(rows);
  result.zeros.resize(rows);
  result.sums.resize(rows);
  check_cuda(cudaMemcpy(result.codes.data(), d_codes.ptr, result.codes.size(), cudaMemcpyDeviceToHost), "cudaMemcpy");
  check_cuda(cudaMemcpy(result.scales.data(), d_scales.ptr, rows * sizeof(float), cudaMemcpyDeviceToHost), "cudaMemcpy");
  check_cuda(cudaMemcpy(result.zeros.data(), d_zeros.ptr, rows * sizeof(float), cudaMemcpyDeviceToHost), "cudaMemcpy");
  check_cuda(cudaMemcpy(result.sums.data(), d_sums.ptr, rows * sizeof(std::int32_t), cudaMemcpyDeviceToHost), "cudaMemcpy");
  return result;
}

template <class Element>
oq::test::PerTokenResult run(const std::vector<float>& x, const oq::test::PerTokenArgs& a,
                             const std::vector<float>& rotation) {
  return run_with<Element>(x, a, rotation, [](const auto& p) { return oq::cuda::device::QuantizePerToken<Element>::run(p); });
}

}  // namespace

namespace oq::test {

namespace {
template <class Element>
std::pair<bool, bool> wide_paths(const PerTokenArgs& args) {
  const auto p = params_of<Element>(args);  // null buffers: aligned like any cudaMalloc result
  using Kernel = typename oq::cuda::device::QuantizePerToken<Element>::Kernel;
  return {Kernel::wide_input(p), Kernel::wide_output(p)};
}
}  // namespace

namespace {
template <class Element>
bool register_path_for(const PerTokenArgs& args) {
  auto p = params_of<Element>(args);
  static float dummy[1];
  p.rotation = args.with_rotation ? dummy : nullptr;
  return oq::cuda::device::QuantizePerToken<Element>::Kernel::register_path(p);
}
}  // namespace

bool per_token_register_path(const PerTokenArgs& args, DeviceInput input) {
  switch (input) {
    case DeviceInput::kHalf: return register_path_for<__half>(args);
    case DeviceInput::kBf16: return register_path_for<__nv_bfloat16>(args);
    default: return register_path_for<float>(args);
  }
}

std::pair<bool, bool> per_token_wide_paths(const PerTokenArgs& args, DeviceInput input) {
  switch (input) {
    case DeviceInput::kHalf: return wide_paths<__half>(args);
    case DeviceInput::kBf16: return wide_paths<__nv_bfloat16>(args);
    default: return wide_paths<float>(args);
  }
}

std::pair<std::size_t, int> per_token_staged_shared_memory(const PerTokenArgs& args) {
  constexpr int kThreads = 256;  // QuantizePerToken<float>'s default
  using Kernel = oq::cuda::device::QuantizePerToken<float, kThreads>::Kernel;
  const auto p = params_of<float>(args);
  cudaFuncAttributes attributes{};
  check_cuda(cudaFuncGetAttributes(&attributes, oq::cuda::kernel::quantize_per_token_kernel<float, kThreads, 0, false>),
             "cudaFuncGetAttributes");
  return {Kernel::dynamic_smem_bytes(p), attributes.maxDynamicSharedSizeBytes};
}

std::string check_per_token_arguments(const PerTokenArgs& args) {
  auto p = params_of<float>(args);
  static float dummy[1];
  static std::uint8_t dummy_codes[1];
  p.x = dummy;
  p.codes = dummy_codes;
  p.scales = args.null_output ? nullptr : dummy;
  p.zeros = dummy;
  p.rotation = args.with_rotation ? dummy : nullptr;
  const auto report = oq::cuda::device::QuantizePerToken<float>::check_arguments(p);
  return report.ok() ? std::string() : report.message;
}

PerTokenResult quantize_per_token_on_device(const std::vector<float>& x, const PerTokenArgs& args, DeviceInput input,
                                            const std::vector<float>& rotation) {
  switch (input) {
    case DeviceInput::kFloat: return run<float>(x, args, rotation);
    case DeviceInput::kHalf: return run<__half>(x, args, rotation);
    case DeviceInput::kBf16: return run<__nv_bfloat16>(x, args, rotation);
  }
  throw std::invalid_argument("unknown DeviceInput");
}

namespace {

using oq::test::DeviceInput;
using oq::test::TensorOpConfig;

bool is(const TensorOpConfig& c, int block, int terms, int groups) {
  return c.block == block && c.terms == terms && c.groups == groups;
}

template <class Element, int kBlock, int kTerms>
std::vector<double> replay(const std::vector<float>& x, const std::vector<float>& r) {
  using Layout = oq::cuda::kernel::RotationFragmentLayout<kBlock>;
  using Operand = oq::cuda::kernel::RotationOperand<Element, kBlock, kTerms>;
  constexpr int kTokens = 8;
  std::vector<Element> tile(static_cast<std::size_t>(kTokens * kBlock));
  for (std::size_t i = 0; i < tile.size(); ++i) tile[i] = oq::cuda::from_float<Element>(x[i]);
  auto value = [](std::uint32_t word, int half) {  // the 16-bit value in the low (0) or high (1) half
    const auto bits = static_cast<std::uint16_t>(word >> (16 * half));
    Element e;
    std::memcpy(&e, &bits, sizeof bits);
    return static_cast<double>(oq::cuda::to_float(e));
  };
  std::vector<double> y(static_cast<std::size_t>(kTokens * kBlock), 0.0);
  for (int warp = 0; warp < kBlock / 32; ++warp) {
    std::vector<Operand> a(32);
    std::vector<std::uint32_t> words(32 * Layout::kChunks * 4);  // [lane][chunk][word], as the kernel's 16-byte loads
    for (int lane = 0; lane < 32; ++lane) {
      a[static_cast<std::size_t>(lane)].load(r.data(), warp, lane);
      for (int i = 0; i < Layout::kChunks; ++i)
        std::memcpy(&words[static_cast<std::size_t>((lane * Layout::kChunks + i) * 4)],
                    &tile[static_cast<std::size_t>(Layout::b_token(lane) * kBlock + 8 * Layout::chunk(lane, i))], 16);
    }
    for (int term = 0; term < kTerms; ++term) {
      for (int mt = 0; mt < 2; ++mt) {
        double c[16][8] = {};
        for (int j = 0; j < Layout::kKTiles; ++j) {
          // PTX ISA, mma.m16n8k16 with 16-bit operands (g = lane / 4, t = lane % 4):
          // a0,a1: A[g][2t + i]; a2,a3: A[g + 8][2t + i]; a4,a5: A[g][2t + 8 + i];
          // a6,a7: A[g + 8][2t + 8 + i]; b0,b1: B[2t + i][g]; b2,b3: B[2t + 8 + i][g].
          double am[16][16] = {}, bm[16][8] = {};
          for (int lane = 0; lane < 32; ++lane) {
            const int g = lane / 4, t = lane % 4;
            const auto& regs = a[static_cast<std::size_t>(lane)].a[term][mt][j];
            for (int i = 0; i < 2; ++i) {
              am[g][2 * t + i] = value(regs[0], i);
              am[g + 8][2 * t + i] = value(regs[1], i);
              am[g][2 * t + 8 + i] = value(regs[2], i);
              am[g + 8][2 * t + 8 + i] = value(regs[3], i);
              for (int h = 0; h < 2; ++h) {
                const std::uint32_t b =
                    words[static_cast<std::size_t>((lane * Layout::kChunks + j / 2) * 4 + Layout::b_word(j, h))];
                bm[2 * t + 8 * h + i][g] = value(b, i);
              }
            }
          }
          for (int m = 0; m < 16; ++m)
            for (int n = 0; n < 8; ++n)
              for (int k = 0; k < 16; ++k) c[m][n] += am[m][k] * bm[k][n];
        }
        // c0,c1: C[g][2t + i]; c2,c3: C[g + 8][2t + i].
        for (int lane = 0; lane < 32; ++lane) {
          const int g = lane / 4, t = lane % 4;
          for (int e = 0; e < 4; ++e) {
            const double v = c[g + 8 * (e >> 1)][2 * t + (e & 1)];
            y[static_cast<std::size_t>(Layout::acc_token(lane, e) * kBlock + Layout::acc_channel(warp, mt, lane, e))] += v;
          }
        }
      }
    }
  }
  return y;
}

template <class Element>
std::vector<double> replay_for(const std::vector<float>& x, const std::vector<float>& r, int block, int terms) {
  if (block == 32) return terms == 1 ? replay<Element, 32, 1>(x, r) : replay<Element, 32, 2>(x, r);
  if (block == 64) return terms == 1 ? replay<Element, 64, 1>(x, r) : replay<Element, 64, 2>(x, r);
  if (block == 128) return terms == 1 ? replay<Element, 128, 1>(x, r) : replay<Element, 128, 2>(x, r);
  if (block == 256 && terms == 1) return replay<Element, 256, 1>(x, r);
  throw std::invalid_argument("replay_tensorop_rotation: no such block/terms");
}

}  // namespace

namespace {

using Passes = oq::cuda::kernel::RotationPasses;

// TensorOpConfig::passes (1, 2, 3) to the launcher's enum and back.
Passes passes_of(int number) {
  return number == 1 ? Passes::kResidentY : number == 2 ? Passes::kRecompute : Passes::kResidentYPair;
}
int number_of(Passes passes) { return passes == Passes::kResidentY ? 1 : passes == Passes::kRecompute ? 2 : 3; }

// f.template operator()<Quantize, Element>() for config's instantiation of
// device::QuantizePerTokenTensorOp: (bf16, 128, 2, 1), (bf16, 128, 1, 2),
// (fp16, 64, 2, 2), (fp16, 64, 2, 1) (kResidentY's deepest ring, 16 slots).
template <class F>
auto with_tensorop(const TensorOpConfig& config, const char* who, F&& f) {
  using oq::cuda::device::QuantizePerTokenTensorOp;
  using bf16 = __nv_bfloat16;
  if (is(config, 128, 2, 1)) return f.template operator()<QuantizePerTokenTensorOp<bf16, 128, 2, 1>, bf16>();
  if (is(config, 128, 1, 2)) return f.template operator()<QuantizePerTokenTensorOp<bf16, 128, 1, 2>, bf16>();
  if (is(config, 64, 2, 2)) return f.template operator()<QuantizePerTokenTensorOp<__half, 64, 2, 2>, __half>();
  if (is(config, 64, 2, 1)) return f.template operator()<QuantizePerTokenTensorOp<__half, 64, 2, 1>, __half>();
  throw std::invalid_argument(std::string(who) + ": no such config");
}

// Params for argument-only calls: aligned stand-ins for the device buffers
// (x and codes moved by args' offsets), a rotation unless args says none.
template <class Element>
oq::cuda::kernel::QuantizePerTokenParams<Element> host_params(const PerTokenArgs& args) {
  auto p = params_of<Element>(args);
  alignas(16) static Element x[16];
  alignas(16) static std::uint8_t codes[16];
  static float dummy[1];
  p.x = reinterpret_cast<const Element*>(reinterpret_cast<const char*>(x) + args.x_offset_bytes);
  p.codes = codes + args.codes_offset_bytes;
  p.scales = args.null_output ? nullptr : dummy;
  p.zeros = dummy;
  p.rotation = args.with_rotation ? dummy : nullptr;
  return p;
}

}  // namespace

std::string check_per_token_tensorop_arguments(const PerTokenArgs& args, TensorOpConfig config) {
  return with_tensorop(config, "check_per_token_tensorop_arguments", [&]<class Quantize, class Element>() {
    const auto report = Quantize::check_arguments(host_params<Element>(args));
    return report.ok() ? std::string() : report.message;
  });
}

bool device_has_clusters() {
  int device = 0, major = 0;
  if (cudaGetDevice(&device) != cudaSuccess) return false;
  if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess) return false;
  return major >= 9;
}

std::size_t tensorop_shared_memory_bytes(const PerTokenArgs& args, TensorOpConfig config) {
  if (config.passes < 1 || config.passes > 3) throw std::invalid_argument("tensorop_shared_memory_bytes: passes 1, 2 or 3");
  return with_tensorop(config, "tensorop_shared_memory_bytes", [&]<class Quantize, class Element>() {
    return Quantize::shared_memory_bytes(params_of<Element>(args), passes_of(config.passes));
  });
}

int tensorop_chosen_passes(const PerTokenArgs& args, TensorOpConfig config) {
  PerTokenArgs with_rotation = args;
  with_rotation.with_rotation = true;
  return with_tensorop(config, "tensorop_chosen_passes", [&]<class Quantize, class Element>() {
    return number_of(Quantize::choose_passes(host_params<Element>(with_rotation)));
  });
}

PerTokenResult quantize_per_token_tensorop_on_device(const std::vector<float>& x, const PerTokenArgs& args,
                                                     DeviceInput input, const std::vector<float>& rotation,
                                                     TensorOpConfig config) {
  if (config.passes < 0 || config.passes > 3) throw std::invalid_argument("TensorOpConfig::passes: 0 … 3");
  return with_tensorop(config, "quantize_per_token_tensorop_on_device", [&]<class Quantize, class Element>() {
    if ((input == DeviceInput::kHalf) != std::is_same_v<Element, __half> || input == DeviceInput::kFloat)
      throw std::invalid_argument("quantize_per_token_tensorop_on_device: the input type is not the config's");
    return run_with<Element>(x, args, rotation, [&](const auto& p) {
      return config.passes == 0 ? Quantize::run(p) : Quantize::run(p, nullptr, passes_of(config.passes));
    });
  });
}

TensorOpReplay replay_tensorop_rotation(const std::vector<float>& x, const std::vector<float>& r, int block, int terms,
                                        DeviceInput input) {
  if (x.size() != static_cast<std::size_t>(8 * block) || r.size() != static_cast<std::size_t>(block * block))
    throw std::invalid_argument("replay_tensorop_rotation: x must be 8 × block and r block × block");
  TensorOpReplay out;
  auto rounded = [](const std::vector<float>& v, auto element) {
    using Element = decltype(element);
    std::vector<float> w(v.size());
    for (std::size_t i = 0; i < v.size(); ++i) w[i] = oq::cuda::to_float(oq::cuda::from_float<Element>(v[i]));
    return w;
  };
  if (input == DeviceInput::kBf16) {
    out.y = replay_for<__nv_bfloat16>(x, r, block, terms);
    out.x_as_input = rounded(x, __nv_bfloat16{});
    out.r_as_input = rounded(r, __nv_bfloat16{});
  } else if (input == DeviceInput::kHalf) {
    out.y = replay_for<__half>(x, r, block, terms);
    out.x_as_input = rounded(x, __half{});
    out.r_as_input = rounded(r, __half{});
  } else {
    throw std::invalid_argument("replay_tensorop_rotation: input must be kHalf or kBf16");
  }
  return out;
}

}  // namespace oq::test
