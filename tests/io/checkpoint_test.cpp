// Tests for oq/io/checkpoint.hpp: a sharded checkpoint (two shards and an
// index, written into a fresh temporary directory) read through Checkpoint by
// directory, index and shard file; a single-file checkpoint; lazy opening;
// every malformed index (paths escaping the directory, lexically or through a
// symlinked directory, missing shards, tensors not where the index says) and
// lookup errors; shards that turn out not to be safetensors files (a link to
// an unrelated file, a FIFO planted after the index was read); concurrent reads.
#include <oq/io/checkpoint.hpp>

#include "support/format_error.hpp"
#include "support/matrices.hpp"
#include "support/subprocess.hpp"
#include "support/temp_dir.hpp"

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <filesystem>
#include <fstream>
#include <random>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include <sys/stat.h>

namespace {

using oq::io::Checkpoint;
using oq::io::DType;
using oq::io::FormatError;
using oq::io::SafetensorsWriter;
template <class T>
using RowMatrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

using oq::test::TempDir;

void write_text(const std::filesystem::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  REQUIRE(out.good());
}

// The weights of a two-layer toy model, split over two shards as
// save_pretrained would, plus model.safetensors.index.json.
struct ShardedModel {
  RowMatrix<float> embed = oq::test::gaussian<float>(10, 8, 1);
  RowMatrix<float> q0 = oq::test::gaussian<float>(8, 8, 2);
  Eigen::VectorXf norm0 = Eigen::VectorXf::LinSpaced(8, 0.5f, 1.5f);
  RowMatrix<float> q1 = oq::test::gaussian<float>(8, 8, 3);
  Eigen::VectorXf norm1 = Eigen::VectorXf::LinSpaced(8, 1.5f, 0.5f);

  static constexpr const char* kShard1 = "model-00001-of-00002.safetensors";
  static constexpr const char* kShard2 = "model-00002-of-00002.safetensors";

  void write(const std::filesystem::path& dir) const {
    SafetensorsWriter s1;
    s1.add_metadata("format", "pt");
    s1.add("model.embed_tokens.weight", embed, DType::kBF16);
    s1.add("model.layers.0.self_attn.q_proj.weight", q0, DType::kBF16);
    s1.add("model.layers.0.input_layernorm.weight", norm0, DType::kF32);
    s1.write(dir / kShard1);
    SafetensorsWriter s2;
    s2.add_metadata("format", "pt");
    s2.add("model.layers.1.self_attn.q_proj.weight", q1, DType::kF16);
    s2.add("model.layers.1.input_layernorm.weight", norm1, DType::kF32);
    s2.write(dir / kShard2);
    write_text(dir / "model.safetensors.index.json", index_json());
  }

  static std::string quoted(const char* s) { return std::string("\"") + s + "\""; }

  // The index save_pretrained writes; `shard2` is the JSON value given to
  // layer 1's tensors (a quoted file name, or anything else for the error tests).
  static std::string index_json(const std::string& shard2 = quoted(kShard2)) {
    const std::string shard1 = quoted(kShard1);
    return "{\n"
           "  \"metadata\": {\"total_size\": 1234},\n"
           "  \"weight_map\": {\n"
           "    \"model.embed_tokens.weight\": " + shard1 + ",\n"
           "    \"model.layers.0.input_layernorm.weight\": " + shard1 + ",\n"
           "    \"model.layers.0.self_attn.q_proj.weight\": " + shard1 + ",\n"
           "    \"model.layers.1.input_layernorm.weight\": " + shard2 + ",\n"
           "    \"model.layers.1.self_attn.q_proj.weight\": " + shard2 + "\n"
           "  }\n"
           "}\n";
  }
};

template <class Derived>
RowMatrix<float> through_bf16(const Eigen::MatrixBase<Derived>& x) {
  RowMatrix<float> y = x;
  for (Eigen::Index i = 0; i < y.size(); ++i) {
    y.data()[i] = oq::core::bf16_bits_to_float(oq::core::float_to_bf16_bits(y.data()[i]));
  }
  return y;
}

template <class Derived>
RowMatrix<float> through_f16(const Eigen::MatrixBase<Derived>& x) {
  RowMatrix<float> y = x;
  for (Eigen::Index i = 0; i < y.size(); ++i) {
    y.data()[i] = oq::core::f16_bits_to_float(oq::core::float_to_f16_bits(y.data()[i]));
  }
  return y;
}

void check_model(const Checkpoint& c, const ShardedModel& m) {
  CHECK(c.names() == std::vector<std::string>{"model.embed_tokens.weight", "model.layers.0.input_layernorm.weight",
                                              "model.layers.0.self_attn.q_proj.weight",
                                              "model.layers.1.input_layernorm.weight",
                                              "model.layers.1.self_attn.q_proj.weight"});
  CHECK(c.contains("model.layers.1.input_layernorm.weight"));
  CHECK_FALSE(c.contains("lm_head.weight"));
  CHECK(c.info("model.embed_tokens.weight").shape == std::vector<std::size_t>{10, 8});
  CHECK(c.info("model.embed_tokens.weight").dtype == DType::kBF16);
  CHECK(c.matrix<float>("model.embed_tokens.weight") == through_bf16(m.embed));
  CHECK(c.matrix<float>("model.layers.0.self_attn.q_proj.weight") == through_bf16(m.q0));
  CHECK(c.matrix<double>("model.layers.1.self_attn.q_proj.weight").cast<float>() == through_f16(m.q1));
  CHECK(c.vector<float>("model.layers.0.input_layernorm.weight") == m.norm0);
  CHECK(c.vector<float>("model.layers.1.input_layernorm.weight") == m.norm1);
  CHECK(c.elements<double>("model.layers.1.input_layernorm.weight").size() == 8);
  CHECK(c.bytes("model.layers.1.input_layernorm.weight").size() == 32);
}

std::string format_error_of(const std::filesystem::path& path, const std::string& tensor = "") {
  return oq::test::format_error_message([&] {
    const Checkpoint c(path);
    if (!tensor.empty()) (void)c.info(tensor);
  });
}

}  // namespace

TEST_CASE("sharded checkpoint: by directory, by index file, and each shard alone") {
  TempDir dir;
  const ShardedModel m;
  m.write(dir.path);

  const Checkpoint by_dir(dir.path);
  CHECK(by_dir.is_sharded());
  CHECK(by_dir.directory() == dir.path);
  CHECK(by_dir.index_path() == dir.path / "model.safetensors.index.json");
  CHECK(by_dir.index_metadata()["total_size"] == 1234);
  CHECK(by_dir.shard_paths() ==
        std::vector<std::filesystem::path>{dir.path / ShardedModel::kShard1, dir.path / ShardedModel::kShard2});
  check_model(by_dir, m);
  CHECK(by_dir.file_of("model.layers.1.input_layernorm.weight").source() ==
        (dir.path / ShardedModel::kShard2).string());

  const Checkpoint by_index(dir.path / "model.safetensors.index.json");
  check_model(by_index, m);

  const Checkpoint shard2(dir.path / ShardedModel::kShard2);
  CHECK_FALSE(shard2.is_sharded());
  CHECK(shard2.names() ==
        std::vector<std::string>{"model.layers.1.input_layernorm.weight", "model.layers.1.self_attn.q_proj.weight"});
  CHECK(shard2.vector<float>("model.layers.1.input_layernorm.weight") == m.norm1);
  CHECK_THROWS_WITH_AS(shard2.info("model.embed_tokens.weight"),
                       doctest::Contains(("tensor 'model.embed_tokens.weight' not found in " +
                                         (dir.path / ShardedModel::kShard2).string()).c_str()),
                       std::invalid_argument);

  // A moved checkpoint keeps working.
  Checkpoint moved = Checkpoint(dir.path);
  Checkpoint target(dir.path / ShardedModel::kShard2);
  target = std::move(moved);
  check_model(target, m);
}

TEST_CASE("single-file checkpoint: model.safetensors is preferred over an index, as in transformers") {
  TempDir dir;
  const ShardedModel m;
  m.write(dir.path);
  SafetensorsWriter single;
  single.add("w", m.q0, DType::kF32);
  single.write(dir.path / "model.safetensors");
  const Checkpoint c(dir.path);
  CHECK_FALSE(c.is_sharded());
  CHECK(c.index_metadata().is_null());
  CHECK(c.names() == std::vector<std::string>{"w"});
  CHECK(c.matrix<float>("w") == m.q0);
  CHECK_THROWS_WITH_AS(c.info("x"), doctest::Contains("tensor 'x' not found in"), std::invalid_argument);
}

TEST_CASE("shards are opened lazily, on first use") {
  TempDir dir;
  const ShardedModel m;
  m.write(dir.path);
  const Checkpoint c(dir.path);
  // Corrupt shard 2 after the index was validated: shard 1 still reads, shard 2
  // fails when it is first opened — and again on retry.
  write_text(dir.path / ShardedModel::kShard2, "not a safetensors file");
  CHECK(c.vector<float>("model.layers.0.input_layernorm.weight") == m.norm0);
  CHECK(c.contains("model.layers.1.input_layernorm.weight"));  // from the index alone
  for (int attempt = 0; attempt < 2; ++attempt) {
    CHECK_THROWS_WITH_AS(c.info("model.layers.1.input_layernorm.weight"),
                         doctest::Contains(((dir.path / ShardedModel::kShard2).string()).c_str()), FormatError);
  }
}

TEST_CASE("a tensor the index puts in the wrong shard is reported, naming both") {
  TempDir dir;
  const ShardedModel m;
  m.write(dir.path);
  // Assign layer 1's tensors to shard 1, which does not hold them.
  write_text(dir.path / "model.safetensors.index.json",
             ShardedModel::index_json(ShardedModel::quoted(ShardedModel::kShard1)));
  const Checkpoint c(dir.path);
  const std::string message = format_error_of(dir.path, "model.embed_tokens.weight");
  CHECK(message.find("weight_map assigns tensor 'model.layers.1.input_layernorm.weight' to '" +
                     std::string(ShardedModel::kShard1) + "', but '" +
                     (dir.path / ShardedModel::kShard1).string() +
                     "' has no tensor 'model.layers.1.input_layernorm.weight'") != std::string::npos);
  CHECK(message.find("oq::io::Checkpoint: " + (dir.path / "model.safetensors.index.json").string()) == 0);
}

TEST_CASE("a tensor held by two shards is reported, naming the shard the index gives it") {
  TempDir dir;
  const ShardedModel m;
  m.write(dir.path);
  // Shard 2 rewritten with layer 1's tensors, a tensor the index does not
  // name (left alone, as transformers leaves unexpected keys) and, when
  // `duplicate`, a (different) embedding, which the index gives to shard 1.
  const auto write_shard2 = [&](bool duplicate) {
    SafetensorsWriter s2;
    s2.add("model.layers.1.self_attn.q_proj.weight", m.q1, DType::kF16);
    s2.add("model.layers.1.input_layernorm.weight", m.norm1, DType::kF32);
    s2.add("extra.unindexed", m.norm1, DType::kF32);
    if (duplicate) s2.add("model.embed_tokens.weight", RowMatrix<float>(m.embed * 2.0f), DType::kBF16);
    s2.write(dir.path / ShardedModel::kShard2);
  };
  write_shard2(true);
  const Checkpoint c(dir.path);
  CHECK(c.matrix<float>("model.embed_tokens.weight") == through_bf16(m.embed));  // shard 1 is sound
  const std::string message = format_error_of(dir.path, "model.layers.1.input_layernorm.weight");
  CHECK(message.find("'" + (dir.path / ShardedModel::kShard2).string() +
                     "' holds tensor 'model.embed_tokens.weight', which weight_map assigns to '" +
                     std::string(ShardedModel::kShard1) + "' (expected each tensor in exactly one shard)") !=
        std::string::npos);
  write_shard2(false);
  CHECK(Checkpoint(dir.path).vector<float>("model.layers.1.input_layernorm.weight") == m.norm1);
}

TEST_CASE("shards in a subdirectory and through symlinks are accepted") {
  TempDir dir;
  const ShardedModel m;
  std::filesystem::create_directories(dir.path / "blobs");
  std::filesystem::create_directories(dir.path / "snap");
  m.write(dir.path / "blobs");
  std::filesystem::create_symlink(dir.path / "blobs" / ShardedModel::kShard1, dir.path / "snap" / ShardedModel::kShard1);
  std::filesystem::create_directories(dir.path / "snap" / "sub");
  std::filesystem::copy_file(dir.path / "blobs" / ShardedModel::kShard2, dir.path / "snap" / "sub" / "two.safetensors");
  write_text(dir.path / "snap" / "model.safetensors.index.json", ShardedModel::index_json("\"./sub/two.safetensors\""));
  const Checkpoint c(dir.path / "snap");
  check_model(c, m);
  CHECK(c.shard_paths().at(1) == dir.path / "snap" / "sub" / "two.safetensors");
}

TEST_CASE("malformed indexes → FormatError naming the index") {
  TempDir dir;
  const ShardedModel m;
  m.write(dir.path);
  const auto index = dir.path / "model.safetensors.index.json";
  auto expect = [&](const std::string& json, const std::string& expected) {
    write_text(index, json);
    const std::string message = format_error_of(dir.path);
    INFO("index: ", json);
    INFO("message: ", message);
    CHECK(message.find(index.string()) != std::string::npos);
    CHECK(message.find(expected) != std::string::npos);
  };
  expect(ShardedModel::index_json("\"/etc/passwd\""), "to '/etc/passwd', an absolute path");
  expect(ShardedModel::index_json("\"../model.safetensors\""), "which has a '..' component");
  expect(ShardedModel::index_json("\"sub/../../x.safetensors\""), "which has a '..' component");
  expect(ShardedModel::index_json("\"missing.safetensors\""),
         "assigns tensor 'model.layers.1.input_layernorm.weight' to 'missing.safetensors', which is not a file in");
  expect(ShardedModel::index_json("\".\""), "which is not a file in");
  expect(ShardedModel::index_json("\"\""), "(expected a file name, got an empty string)");
  expect(ShardedModel::index_json("\"a\\u0000b\""), "to 'a\\x00b', which contains a NUL byte");
  expect(ShardedModel::index_json("2"), "weight_map[\"model.layers.1.input_layernorm.weight\"] is number 2");
  expect(R"({"metadata": {}})", "the key \"weight_map\" is missing");
  expect(R"({"weight_map": []})", "\"weight_map\" is an array of 0 elements");
  expect(R"({"metadata": 5, "weight_map": {}})", "\"metadata\" is number 5");
  expect(R"([1, 2])", "the index is an array of 2 elements");
  expect(R"({"weight_map": {"a": "x", "a": "y"}})", "duplicate key 'a' in the object at '/weight_map'");
  expect(R"({"weight_map": {)", "not valid JSON");
  // An empty weight_map is a (useless but) valid index.
  write_text(index, R"({"weight_map": {}})");
  CHECK(Checkpoint(dir.path).names().empty());
}

TEST_CASE("paths that are not checkpoints") {
  TempDir dir;
  CHECK_THROWS_WITH_AS(Checkpoint(dir.path), doctest::Contains("holds neither model.safetensors nor"),
                       std::runtime_error);
  CHECK_THROWS_WITH_AS(Checkpoint(dir.path / "nope"), doctest::Contains("does not exist"), std::runtime_error);
  write_text(dir.path / "pytorch_model.bin", "x");
  CHECK_THROWS_WITH_AS(Checkpoint(dir.path / "pytorch_model.bin"),
                       doctest::Contains("neither a .safetensors file nor a .json index"), std::invalid_argument);
  write_text(dir.path / "model.safetensors", "short");
  CHECK_THROWS_WITH_AS(Checkpoint(dir.path), doctest::Contains("model.safetensors: file is 5 bytes"), FormatError);
}

TEST_CASE("concurrent reads open each shard once and agree") {
  TempDir dir;
  const ShardedModel m;
  m.write(dir.path);
  const Checkpoint c(dir.path);
  const RowMatrix<float> expected_q1 = through_f16(m.q1);
  const RowMatrix<float> expected_q0 = through_bf16(m.q0);
  std::atomic<int> mismatches{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 20; ++i) {
        const bool odd = (t + i) % 2 == 1;
        const auto got = c.matrix<float>(odd ? "model.layers.1.self_attn.q_proj.weight"
                                             : "model.layers.0.self_attn.q_proj.weight");
        if (got != (odd ? expected_q1 : expected_q0)) ++mismatches;
      }
    });
  }
  for (auto& th : threads) th.join();
  CHECK(mismatches == 0);
  // One SafetensorsFile per shard: the same object every time.
  CHECK(&c.file_of("model.layers.1.self_attn.q_proj.weight") == &c.file_of("model.layers.1.input_layernorm.weight"));
}

TEST_CASE("a symlinked directory leading outside the checkpoint is refused; inside, and shard links, are not") {
  TempDir dir;
  const ShardedModel m;
  std::filesystem::create_directories(dir.path / "ckpt" / "sub");
  std::filesystem::create_directories(dir.path / "elsewhere");
  m.write(dir.path / "ckpt");
  std::filesystem::copy_file(dir.path / "ckpt" / ShardedModel::kShard2, dir.path / "elsewhere" / "two.safetensors");
  std::filesystem::copy_file(dir.path / "ckpt" / ShardedModel::kShard2, dir.path / "ckpt" / "sub" / "two.safetensors");
  std::filesystem::create_directory_symlink(dir.path / "elsewhere", dir.path / "ckpt" / "out");
  std::filesystem::create_directory_symlink(dir.path / "ckpt" / "sub", dir.path / "ckpt" / "alias");
  const auto index = dir.path / "ckpt" / "model.safetensors.index.json";
  // Before: only ".." was looked for, and "out/…" read a file outside.
  write_text(index, ShardedModel::index_json("\"out/two.safetensors\""));
  const std::string message = format_error_of(dir.path / "ckpt");
  INFO("message: ", message);
  CHECK(message.find("to 'out/two.safetensors', whose directory 'out' leads outside the checkpoint directory") !=
        std::string::npos);
  // A link to a directory inside the checkpoint is harmless.
  write_text(index, ShardedModel::index_json("\"alias/two.safetensors\""));
  check_model(Checkpoint(dir.path / "ckpt"), m);
  // The checkpoint directory itself reached through a link, and a shard file
  // that is a link to a file outside (the Hugging Face cache's blobs).
  std::filesystem::create_directory_symlink(dir.path / "ckpt", dir.path / "ckpt_link");
  std::filesystem::create_symlink(dir.path / "elsewhere" / "two.safetensors", dir.path / "ckpt" / "blob.safetensors");
  write_text(index, ShardedModel::index_json("\"blob.safetensors\""));
  check_model(Checkpoint(dir.path / "ckpt_link"), m);
}

TEST_CASE("a directory replaced by an outside link after the index was read is refused when the shard opens") {
  TempDir dir;
  const ShardedModel m;
  std::filesystem::create_directories(dir.path / "ckpt" / "sub");
  std::filesystem::create_directories(dir.path / "elsewhere");
  m.write(dir.path / "ckpt");
  std::filesystem::copy_file(dir.path / "ckpt" / ShardedModel::kShard2, dir.path / "ckpt" / "sub" / "two.safetensors");
  std::filesystem::copy_file(dir.path / "ckpt" / ShardedModel::kShard2, dir.path / "elsewhere" / "two.safetensors");
  write_text(dir.path / "ckpt" / "model.safetensors.index.json", ShardedModel::index_json("\"sub/two.safetensors\""));
  const Checkpoint c(dir.path / "ckpt");
  std::filesystem::remove_all(dir.path / "ckpt" / "sub");
  std::filesystem::create_directory_symlink(dir.path / "elsewhere", dir.path / "ckpt" / "sub");
  CHECK_THROWS_WITH_AS(c.vector<float>("model.layers.1.input_layernorm.weight"),
                       doctest::Contains("whose directory 'sub' leads outside the checkpoint directory"), FormatError);
}

TEST_CASE("a shard that is not a safetensors file: its bytes never reach the message") {
  TempDir dir;
  const ShardedModel m;
  m.write(dir.path);
  // A link to an unrelated file, as a hostile archive could hold.
  const std::string secret = "-----BEGIN OPENSSH PRIVATE KEY-----\nsecret material\n";
  write_text(dir.path / "id_ed25519", secret);
  std::filesystem::remove(dir.path / ShardedModel::kShard2);
  std::filesystem::create_symlink(dir.path / "id_ed25519", dir.path / ShardedModel::kShard2);
  const std::string message = format_error_of(dir.path, "model.layers.1.input_layernorm.weight");
  INFO("message: ", message);
  CHECK(message.find("exceeds the limit") != std::string::npos);
  CHECK(message.find("BEGIN") == std::string::npos);
  CHECK(message.find("secret") == std::string::npos);
  // The length fits and the header starts with '{' but is no JSON.
  std::string forged(8, '\0');
  forged[0] = static_cast<char>(secret.size() + 1);
  write_text(dir.path / "id_ed25519", forged + "{" + secret);
  const std::string json_message = format_error_of(dir.path, "model.layers.1.input_layernorm.weight");
  INFO("message: ", json_message);
  CHECK(json_message.find("not valid JSON") != std::string::npos);
  CHECK(json_message.find("BEGIN") == std::string::npos);
  CHECK(json_message.find("secret") == std::string::npos);
}

TEST_CASE("a FIFO planted as a shard after the index was read is refused without blocking") {
  TempDir dir;
  const ShardedModel m;
  m.write(dir.path);
  const Checkpoint c(dir.path);  // the shards exist and are regular files now
  std::filesystem::remove(dir.path / ShardedModel::kShard2);
  REQUIRE(::mkfifo((dir.path / ShardedModel::kShard2).c_str(), 0600) == 0);
  // Before: the shard was checked only when the index was read, and mapping
  // it opened the FIFO, which blocks until a writer comes (forever).
  CHECK(oq::test::finishes_within(std::chrono::seconds(5), [&] {
    try {
      (void)c.vector<float>("model.layers.1.input_layernorm.weight");
    } catch (const std::system_error& e) {
      return std::string(e.what()).find("is a FIFO, not a regular file") != std::string::npos;
    }
    return false;
  }));
  CHECK(c.vector<float>("model.layers.0.input_layernorm.weight") == m.norm0);  // the other shard reads on
}
