// Replay driver for oq's fuzz targets: a plain main() that feeds a
// LLVMFuzzerTestOneInput every seed of a corpus directory, every truncation of
// every seed, and a fixed number of deterministic mutations of each.
//
// Why: libFuzzer needs clang, and oq's default and asan builds use g++. Linked
// with this driver, each fuzz target becomes an ordinary ctest test
// (fuzz.<name>_replay) that gives the parsers adversarial inputs in every
// build — under AddressSanitizer and UBSan in the asan preset — with no clang.
// It is deterministic (std::mt19937 with a fixed seed), so a failure reproduces
// exactly; the real fuzzer (OQ_BUILD_FUZZERS) explores beyond it.
//
//   fuzz.npy_replay <corpus dir> [mutations per seed, default 5000] [-v]
//
// -v prints each input's origin before running it (to find the input behind a
// sanitizer report, which ends the process). An exception escaping the target
// is a bug too: the driver reports it, writes the input to
// replay-failure.bin in the working directory (the build tree under ctest) and
// exits 1. An empty or missing corpus is an error, so a wrong path cannot
// pass by testing nothing.
#include <algorithm>
#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size);

namespace {

using Input = std::vector<std::uint8_t>;

// Bytes that steer text parsers (JSON, Python literals) into their other
// branches, and the boundary values of binary length fields.
constexpr std::array<std::uint8_t, 24> kInteresting = {0x00, 0xFF, 0x7F, 0x80, '{', '}', '[', ']',
                                                       '(',  ')',  '"',  '\'', ',', ':', ' ', '\n',
                                                       '-',  '0',  '1',  '9',  'L', '>', '\\', 'e'};
constexpr std::array<std::uint64_t, 10> kInterestingInts = {
    0, 1, 8, 0x7F, 0xFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF, 0x7FFFFFFFFFFFFFFF, 0xFFFFFFFFFFFFFFFF};

std::size_t below(std::mt19937& rng, std::size_t n) {  // uniform in [0, n), n > 0
  return std::uniform_int_distribution<std::size_t>(0, n - 1)(rng);
}

// One random edit of `in` (which may be empty); `other` is another seed for
// splicing. Edits 0, 1, 5, 6, 9 and 10 keep the size, so length fields and
// data sizes still add up and the input gets past the framing checks into
// the header parsers; the rotation acts like an insertion plus a deletion
// inside the header. They get twice the weight of the others.
void mutate_once(Input& in, const Input& other, std::mt19937& rng) {
  const std::size_t n = in.size();
  constexpr std::array<int, 17> kWeighted = {0, 0, 1, 1, 2, 3, 4, 5, 5, 6, 6, 7, 8, 9, 9, 10, 10};
  switch (kWeighted[below(rng, kWeighted.size())]) {
    case 0:  // flip one bit
      if (n > 0) in[below(rng, n)] ^= static_cast<std::uint8_t>(1u << below(rng, 8));
      break;
    case 1:  // overwrite one byte with an interesting one
      if (n > 0) in[below(rng, n)] = kInteresting[below(rng, kInteresting.size())];
      break;
    case 2: {  // insert 1–4 bytes, interesting or random
      const std::size_t at = below(rng, n + 1), count = 1 + below(rng, 4);
      for (std::size_t i = 0; i < count; ++i) {
        const auto b = below(rng, 2) == 0 ? kInteresting[below(rng, kInteresting.size())]
                                          : static_cast<std::uint8_t>(below(rng, 256));
        in.insert(in.begin() + static_cast<std::ptrdiff_t>(at), b);
      }
      break;
    }
    case 3:  // erase a short range
      if (n > 0) {
        const std::size_t at = below(rng, n), count = 1 + below(rng, std::min<std::size_t>(n - at, 16));
        in.erase(in.begin() + static_cast<std::ptrdiff_t>(at), in.begin() + static_cast<std::ptrdiff_t>(at + count));
      }
      break;
    case 4:  // truncate
      in.resize(below(rng, n + 1));
      break;
    case 5:  // overwrite 2, 4 or 8 bytes with a little-endian boundary integer (length fields)
      if (n > 0) {
        const std::size_t width = std::size_t{2} << below(rng, 3), at = below(rng, n);
        std::uint64_t v = kInterestingInts[below(rng, kInterestingInts.size())];
        if (below(rng, 4) == 0) v = n + below(rng, 64) - 32;  // near the input's own size
        for (std::size_t i = 0; i < width && at + i < n; ++i) in[at + i] = static_cast<std::uint8_t>(v >> (8 * i));
      }
      break;
    case 6:  // copy a range of the input over another place of it
      if (n > 1) {
        const std::size_t from = below(rng, n), to = below(rng, n);
        const std::size_t count = 1 + below(rng, std::min<std::size_t>({n - from, n - to, 32}));
        const Input chunk(in.begin() + static_cast<std::ptrdiff_t>(from),
                          in.begin() + static_cast<std::ptrdiff_t>(from + count));
        std::copy(chunk.begin(), chunk.end(), in.begin() + static_cast<std::ptrdiff_t>(to));
      }
      break;
    case 7: {  // insert a long run of digits (overflowing numbers)
      const std::string digits(1 + below(rng, 24), static_cast<char>('0' + below(rng, 10)));
      in.insert(in.begin() + static_cast<std::ptrdiff_t>(below(rng, n + 1)), digits.begin(), digits.end());
      break;
    }
    case 8:  // splice: a prefix of this input and a suffix of another seed
      if (!other.empty()) {
        in.resize(below(rng, n + 1));
        const std::size_t from = below(rng, other.size());
        in.insert(in.end(), other.begin() + static_cast<std::ptrdiff_t>(from), other.end());
      }
      break;
    case 9:  // rotate a range by one byte, either way
      if (n > 1) {
        const std::size_t a = below(rng, n - 1), b = a + 2 + below(rng, std::min<std::size_t>(n - a - 1, 64));
        const auto first = in.begin() + static_cast<std::ptrdiff_t>(a);
        const auto last = in.begin() + static_cast<std::ptrdiff_t>(b);
        if (below(rng, 2) == 0) std::rotate(first, first + 1, last);
        else std::rotate(first, last - 1, last);
      }
      break;
    case 10:  // swap two bytes
      if (n > 1) std::swap(in[below(rng, n)], in[below(rng, n)]);
      break;
  }
}

struct Seed {
  std::string name;
  Input bytes;
};

bool run(const Input& in, const std::string& origin, bool verbose) {
  if (verbose) {
    std::printf("%s (%zu bytes)\n", origin.c_str(), in.size());
    std::fflush(stdout);
  }
  try {
    LLVMFuzzerTestOneInput(in.data(), in.size());
    return true;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "replay: %s: an exception escaped the fuzz target: %s\n", origin.c_str(), e.what());
  } catch (...) {
    std::fprintf(stderr, "replay: %s: a non-std exception escaped the fuzz target\n", origin.c_str());
  }
  std::ofstream("replay-failure.bin", std::ios::binary)
      .write(reinterpret_cast<const char*>(in.data()), static_cast<std::streamsize>(in.size()));
  std::fprintf(stderr, "replay: the input is in replay-failure.bin\n");
  return false;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s <corpus dir> [mutations per seed] [-v]\n", argv[0]);
    return 2;
  }
  const std::filesystem::path dir = argv[1];
  std::size_t mutations = 5000;
  bool verbose = false;
  for (int i = 2; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "-v") verbose = true;
    else mutations = static_cast<std::size_t>(std::strtoull(argv[i], nullptr, 10));
  }

  std::vector<Seed> seeds;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    if (!entry.is_regular_file()) continue;
    std::ifstream f(entry.path(), std::ios::binary);
    seeds.push_back({entry.path().filename().string(), Input(std::istreambuf_iterator<char>(f), {})});
  }
  if (ec || seeds.empty()) {
    std::fprintf(stderr, "replay: no seed files in '%s'%s%s\n", dir.string().c_str(), ec ? ": " : "",
                 ec ? ec.message().c_str() : "");
    return 1;
  }
  // directory_iterator order is unspecified: sort so the mutation sequence is fixed.
  std::sort(seeds.begin(), seeds.end(), [](const Seed& a, const Seed& b) { return a.name < b.name; });

  const auto start = std::chrono::steady_clock::now();
  std::mt19937 rng(20240611u);
  std::size_t inputs = 0;
  for (std::size_t s = 0; s < seeds.size(); ++s) {
    const Seed& seed = seeds[s];
    if (!run(seed.bytes, seed.name, verbose)) return 1;
    ++inputs;
    for (std::size_t n = 0; n < seed.bytes.size(); ++n) {
      const Input prefix(seed.bytes.begin(), seed.bytes.begin() + static_cast<std::ptrdiff_t>(n));
      if (!run(prefix, seed.name + " truncated to " + std::to_string(n), verbose)) return 1;
      ++inputs;
    }
    const Input& other = seeds[(s + 1) % seeds.size()].bytes;
    for (std::size_t m = 0; m < mutations; ++m) {
      Input in = seed.bytes;
      const std::size_t edits = 1 + below(rng, 3);
      for (std::size_t e = 0; e < edits; ++e) mutate_once(in, other, rng);
      if (!run(in, seed.name + " mutation " + std::to_string(m), verbose)) return 1;
      ++inputs;
    }
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("replay: %zu inputs from %zu seeds in '%s' (%zu mutations each), %.2f s, no failures\n", inputs,
              seeds.size(), dir.string().c_str(), mutations, seconds);
  return 0;
}
