// Writes large seed inputs for the long fuzz runs (fuzz.<name>_long, issue 23).
//
// Why: the seed corpora hold files under 1 KB and libFuzzer stays near their
// size (4 KB at most by default), so the fuzz runs could never reach what
// only a large input shows: a parser quadratic in the number of header
// entries, memory many times an input's size, a rotation block large enough
// for a size-dependent tolerance. These seeds are valid files of that size,
// written with oq's own writers (fixed seeds: the same bytes every run), from
// which the long runs mutate with inputs up to 4 MiB. They are generated in
// the build tree, not stored in the repository, and are not replayed by the
// replay tests (every truncation of a megabyte seed would take too long).
//
//   fuzz.large_seeds <dir>   writes <dir>/safetensors/, <dir>/npy/, <dir>/duquant/
#include <oq/io/npy.hpp>
#include <oq/io/safetensors.hpp>
#include <oq/transform/duquant_io.hpp>
#include <oq/transform/random_orthogonal.hpp>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

namespace {

void write_file(const std::filesystem::path& path, const std::vector<std::byte>& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s <output directory>\n", argv[0]);
    return 2;
  }
  namespace fs = std::filesystem;
  const fs::path dir = argv[1];
  for (const char* name : {"safetensors", "npy", "duquant"}) fs::create_directories(dir / name);
  std::mt19937 rng(23);

  // safetensors: 20,000 one-element tensors (a 1.3 MB header: the quadratic
  // parser took seconds on it), and 300 tensors of every dtype and ranks 0-4
  // with 2,000 metadata entries.
  {
    oq::io::SafetensorsWriter many;
    const std::vector<std::byte> four(4, std::byte{0x3f});
    for (int i = 0; i < 20000; ++i) {
      std::string name = "model.layers.";
      name += std::to_string(i / 100);
      name += ".w";
      name += std::to_string(i % 100);
      many.add(std::move(name), oq::io::DType::kF32, {1}, four);
    }
    write_file(dir / "safetensors" / "large_20000_tensors.safetensors", many.bytes());

    oq::io::SafetensorsWriter mixed;
    for (int i = 0; i < 2000; ++i) mixed.add_metadata("key" + std::to_string(i), std::string(i % 17, 'v'));
    std::uniform_int_distribution<int> dim(0, 5), byte(0, 255);
    for (int i = 0; i < 300; ++i) {
      const oq::io::DType dtype = oq::io::kAllDTypes[static_cast<std::size_t>(i) % oq::io::kAllDTypes.size()];
      std::vector<std::size_t> shape(static_cast<std::size_t>(i % 5));
      std::size_t count = 1;
      for (auto& d : shape) count *= (d = static_cast<std::size_t>(dim(rng)));
      std::vector<std::byte> data(count * oq::io::dtype_size(dtype));
      for (auto& b : data) b = static_cast<std::byte>(byte(rng));
      if (dtype == oq::io::DType::kBool) {
        for (auto& b : data) b = static_cast<std::byte>(static_cast<unsigned>(b) & 1u);
      }
      mixed.add("t" + std::to_string(i), dtype, shape, data);
    }
    write_file(dir / "safetensors" / "large_mixed.safetensors", mixed.bytes());
  }

  // npy: a 1024 × 512 '<f4' (2 MiB) and a 3-D '<f2'.
  {
    std::normal_distribution<double> normal;
    const Eigen::MatrixXd a = Eigen::MatrixXd::NullaryExpr(1024, 512, [&] { return normal(rng); });
    write_file(dir / "npy" / "large_f4_1024x512.npy", oq::io::npy_bytes(oq::io::make_npy(a, oq::io::DType::kF32)));
    oq::io::NpyArray h = oq::io::make_npy(a.topRows(256), oq::io::DType::kF16);
    h.shape = {64, 4, 512};
    write_file(dir / "npy" / "large_f2_64x4x512.npy", oq::io::npy_bytes(h));
  }

  // duquant: float, C = 1024, b = 256 (above the legacy bound's 128), two
  // rotations and smoothing scales.
  {
    std::vector<Eigen::MatrixXf> rotations;
    for (int k = 0; k < 2; ++k) rotations.push_back(oq::transform::random_orthogonal<double>(256, rng).cast<float>());
    oq::transform::Permutation perm(1024);
    for (std::size_t j = 0; j < perm.size(); ++j) perm[j] = static_cast<Eigen::Index>((j * 7) % 1024);
    const Eigen::VectorXf smoothing = Eigen::VectorXf::LinSpaced(1024, 0.5f, 2.0f);
    const oq::transform::DuQuantTransform<float> t(1024, rotations, {perm}, smoothing);
    std::ofstream out(dir / "duquant" / "large_float_c1024_b256.duquant", std::ios::binary | std::ios::trunc);
    oq::transform::save_duquant(out, t);
  }
  return 0;
}
