// oq/io/checkpoint.hpp: the weights of a Hugging Face model directory, one
// safetensors file or several shards behind an index, read by tensor name.
//
// Why: a LLaMA-2-7B checkpoint is model-00001-of-00002.safetensors and
// model-00002-of-00002.safetensors plus model.safetensors.index.json; code
// that quantizes layer 17 should not care which shard holds its weights.
//
// Layouts (what transformers' save_pretrained writes and from_pretrained
// reads; it looks for model.safetensors first, then the index):
//   dir/model.safetensors                      one file
//   dir/model.safetensors.index.json           sharded:
//       {"metadata": {"total_size": 13476839424},
//        "weight_map": {"model.embed_tokens.weight": "model-00001-of-00002.safetensors", ...}}
// The constructor takes such a directory, a .safetensors file, or an index
// .json file (its shards are looked up next to it).
//
// The index is validated up front: "weight_map" must be an object of strings
// naming files inside the directory that exist. Shards are memory-mapped
// lazily, on the first access to one of their tensors, so opening a 13 GB
// checkpoint costs nothing until a weight is read. When a shard is opened,
// every tensor the index assigns to it must really be in it: a mismatch
// throws FormatError naming the index, the tensor and the shard.
//
// Which files an index may make oq open (issue 23). The index is data (it
// comes with a download, or is written by any tool), the directory is what
// its owner put there; an index must not reach files its directory does not
// hold. So:
//   - a shard name is a relative path without a ".." component (checked
//     lexically), and
//   - its directories, resolved (std::filesystem::canonical), must lie inside
//     the resolved checkpoint directory: a symlinked directory component that
//     leads elsewhere (a link to the home directory, or to /) is refused, so
//     that an index cannot walk a whole foreign tree through one link;
//   - the shard file itself may be a symbolic link, to anywhere: the Hugging
//     Face cache links snapshots/<revision>/model-00001-of-00002.safetensors
//     to ../../blobs/<sha256>, outside the snapshot directory. Each such link
//     was put there by whoever made the directory, file by file.
// The directory check is made when the index is read and again when the shard
// is opened. Whatever a shard turns out to be, it is opened as detail_file::
// RegularFile opens files (a FIFO or a device is refused, without blocking,
// on the opened descriptor), and an error about it never quotes its bytes
// unless they parse as a safetensors header (io/safetensors.hpp): a link to
// an unrelated file (a private key) gives "not a safetensors file", not its
// first bytes. Only the directory author can plant such a link, and the
// window between the second check and the open gives nothing more to someone
// who can rename directories in the checkpoint: they could as well link the
// shard itself to any file.
//
//   oq::io::Checkpoint ckpt("Llama-2-7b-hf");
//   auto w = ckpt.matrix<float>("model.layers.17.mlp.down_proj.weight");   // 4096 × 11008
//   auto g = ckpt.vector<float>("model.layers.17.input_layernorm.weight");  // 4096
#pragma once

#include <oq/io/format_error.hpp>
#include <oq/io/json.hpp>
#include <oq/io/safetensors.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstddef>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

namespace oq::io {

/// A model's weights in one safetensors file or in shards behind an index.
/// Move-only; const member functions may be called from several threads at
/// once (opening a shard is serialised by a mutex).
class Checkpoint {
 public:
  template <class T>
  using Matrix = SafetensorsFile::Matrix<T>;
  template <class T>
  using Vector = SafetensorsFile::Vector<T>;

  static constexpr std::string_view kSingleFileName = "model.safetensors";
  static constexpr std::string_view kIndexFileName = "model.safetensors.index.json";

  /// Opens a checkpoint directory (model.safetensors, else
  /// model.safetensors.index.json), a .safetensors file or an index .json
  /// file. Throws std::runtime_error when the path or the files it needs do
  /// not exist or cannot be read, std::invalid_argument for a file that is
  /// neither .safetensors nor .json, and FormatError for a malformed index
  /// (or a malformed single file, which is opened at once).
  explicit Checkpoint(const std::filesystem::path& path) : mutex_(std::make_unique<std::mutex>()) {
    namespace fs = std::filesystem;
    std::error_code ec;
    if (fs::is_directory(path, ec)) {
      directory_ = path;
      if (fs::is_regular_file(path / kSingleFileName, ec)) {
        open_single(path / kSingleFileName);
      } else if (fs::is_regular_file(path / kIndexFileName, ec)) {
        open_index(path / kIndexFileName);
      } else {
        throw std::runtime_error("oq::io::Checkpoint: '" + path.string() + "' holds neither " +
                                 std::string(kSingleFileName) + " nor " + std::string(kIndexFileName));
      }
    } else if (fs::is_regular_file(path, ec)) {
      directory_ = path.parent_path();
      if (path.extension() == ".json") {
        open_index(path);
      } else if (path.extension() == ".safetensors") {
        open_single(path);
      } else {
        throw std::invalid_argument("oq::io::Checkpoint: '" + path.string() +
                                    "' is neither a .safetensors file nor a .json index (nor a directory)");
      }
    } else {
      throw std::runtime_error("oq::io::Checkpoint: '" + path.string() + "' does not exist");
    }
  }

  Checkpoint(const Checkpoint&) = delete;
  Checkpoint& operator=(const Checkpoint&) = delete;
  Checkpoint(Checkpoint&&) noexcept = default;
  Checkpoint& operator=(Checkpoint&&) noexcept = default;
  ~Checkpoint() = default;

  /// The directory the shards are in.
  const std::filesystem::path& directory() const noexcept { return directory_; }
  /// The index file, or an empty path for a single-file checkpoint.
  const std::filesystem::path& index_path() const noexcept { return index_; }
  bool is_sharded() const noexcept { return !index_.empty(); }
  /// The index's "metadata" object (e.g. {"total_size": ...}); null when
  /// absent or for a single file.
  const nlohmann::json& index_metadata() const noexcept { return index_metadata_; }

  /// The shard files, in order of first appearance in the index.
  std::vector<std::filesystem::path> shard_paths() const {
    std::vector<std::filesystem::path> out;
    out.reserve(shards_.size());
    for (const Shard& s : shards_) out.push_back(s.path);
    return out;
  }

  bool contains(std::string_view name) const { return weight_map_.find(name) != weight_map_.end(); }

  /// Every tensor name, sorted.
  std::vector<std::string> names() const {
    std::vector<std::string> out;
    out.reserve(weight_map_.size());
    for (const auto& [name, shard] : weight_map_) {
      (void)shard;
      out.push_back(name);
    }
    return out;
  }

  /// The file that holds `name`, opened (and checked against the index) on
  /// first use. Throws std::invalid_argument when there is no such tensor.
  const SafetensorsFile& file_of(std::string_view name) const { return shard(shard_index(name)); }

  const TensorInfo& info(std::string_view name) const { return file_of(name).info(name); }
  std::span<const std::byte> bytes(std::string_view name) const { return file_of(name).bytes(name); }

  /// See SafetensorsFile::matrix: 2-D as is ([out, in] row-major), 1-D as 1 × n.
  template <class T = float>
  Matrix<T> matrix(std::string_view name) const {
    return file_of(name).template matrix<T>(name);
  }

  /// See SafetensorsFile::vector: any shape with at most one dimension ≠ 1.
  template <class T = float>
  Vector<T> vector(std::string_view name) const {
    return file_of(name).template vector<T>(name);
  }

  /// See SafetensorsFile::elements: any rank, C order.
  template <class T = float>
  std::vector<T> elements(std::string_view name) const {
    return file_of(name).template elements<T>(name);
  }

 private:
  struct Shard {
    std::filesystem::path path;
    std::string relative;             // as the index names it (normalised)
    std::vector<std::string> names;   // the tensors the index assigns to it
    std::unique_ptr<SafetensorsFile> file;  // null until first use
  };

  [[noreturn]] void fail_index(const std::string& what) const {
    throw FormatError("oq::io::Checkpoint: " + index_.string() + ": " + what);
  }

  void open_single(const std::filesystem::path& file) {
    Shard s;
    s.path = file;
    s.relative = file.filename().string();
    s.file = std::make_unique<SafetensorsFile>(file);
    for (const TensorInfo& t : s.file->tensors()) {
      weight_map_.emplace(t.name, 0);
      s.names.push_back(t.name);
    }
    shards_.push_back(std::move(s));
  }

  void open_index(const std::filesystem::path& index) {
    namespace fs = std::filesystem;
    index_ = index;
    nlohmann::json j = read_json(index);
    if (!j.is_object()) fail_index("the index is " + detail_json::describe(j) + " (expected a JSON object)");
    if (j.contains("metadata")) {
      nlohmann::json& m = j["metadata"];
      if (!m.is_object() && !m.is_null()) {
        fail_index("\"metadata\" is " + detail_json::describe(m) + " (expected an object)");
      }
      // Moved, not copied: copying (like dump()) recurses once per nesting
      // level, and a hostile index could nest deeply enough to overflow the stack.
      index_metadata_ = std::move(m);
    }
    if (!j.contains("weight_map")) fail_index("the key \"weight_map\" is missing");
    const nlohmann::json& map = j["weight_map"];
    if (!map.is_object()) {
      fail_index("\"weight_map\" is " + detail_json::describe(map) + " (expected an object of tensor name → file)");
    }
    std::map<std::string, std::size_t> shard_of_file;
    for (const auto& [name, value] : map.items()) {
      if (!value.is_string()) {
        fail_index("weight_map[\"" + detail_json::printable(name) + "\"] is " + detail_json::describe(value) +
                   " (expected the name of a .safetensors file)");
      }
      const std::string& file = value.get_ref<const std::string&>();
      const fs::path relative = checked_relative(name, file);
      const std::string key = relative.generic_string();
      auto [it, inserted] = shard_of_file.emplace(key, shards_.size());
      if (inserted) {
        Shard s;
        s.path = directory_ / relative;
        s.relative = key;
        const std::string assigns = "weight_map assigns tensor '" + detail_json::printable(name) + "' to '" +
                                    detail_json::printable(file) + "'";
        check_inside(relative, assigns);
        std::error_code ec;
        if (!fs::is_regular_file(s.path, ec)) {
          fail_index(assigns + ", which is not a file in '" + directory_.string() + "'");
        }
        shards_.push_back(std::move(s));
      }
      shards_[it->second].names.push_back(name);
      weight_map_.emplace(name, it->second);
    }
  }

  /// The shard file name as a relative path inside the directory, or
  /// FormatError: empty, NUL bytes, absolute or rooted, or a ".." component.
  std::filesystem::path checked_relative(const std::string& tensor, const std::string& file) const {
    const std::string prefix =
        "weight_map assigns tensor '" + detail_json::printable(tensor) + "' to '" + detail_json::printable(file) + "'";
    if (file.empty()) fail_index(prefix + " (expected a file name, got an empty string)");
    if (file.find('\0') != std::string::npos) fail_index(prefix + ", which contains a NUL byte");
    const std::filesystem::path p(file);
    if (p.is_absolute() || p.has_root_name() || p.has_root_directory()) {
      fail_index(prefix + ", an absolute path (expected a file inside the checkpoint directory)");
    }
    for (const auto& part : p) {
      if (part == "..") fail_index(prefix + ", which has a '..' component (expected a file inside the checkpoint directory)");
    }
    return p.lexically_normal();
  }

  /// The directories of `relative`, resolved, must lie inside the resolved
  /// checkpoint directory (see the top of this file); a missing directory is
  /// left to the caller's "not a file" check.
  void check_inside(const std::filesystem::path& relative, const std::string& assigns) const {
    namespace fs = std::filesystem;
    if (!relative.has_parent_path()) return;  // a file in the directory itself
    std::error_code ec;
    const fs::path root = fs::canonical(directory_, ec);
    if (ec) {
      throw std::runtime_error("oq::io::Checkpoint: cannot resolve '" + directory_.string() + "': " + ec.message());
    }
    const fs::path parent = fs::canonical(directory_ / relative.parent_path(), ec);
    if (ec) return;
    const auto [r, p] = std::mismatch(root.begin(), root.end(), parent.begin(), parent.end());
    if (r != root.end()) {
      fail_index(assigns + ", whose directory '" + relative.parent_path().generic_string() +
                 "' leads outside the checkpoint directory through a symbolic link (expected the shard's " +
                 "directories inside it; only the shard file itself may be a link)");
    }
  }

  std::size_t shard_index(std::string_view name) const {
    const auto it = weight_map_.find(name);
    if (it == weight_map_.end()) {
      throw std::invalid_argument("oq::io::Checkpoint: tensor '" + std::string(name) + "' not found in " +
                                  (is_sharded() ? index_.string() : shards_.front().path.string()));
    }
    return it->second;
  }

  const SafetensorsFile& shard(std::size_t i) const {
    const std::lock_guard<std::mutex> lock(*mutex_);
    Shard& s = shards_[i];
    if (!s.file) {
      // Again now: a directory may have been replaced by a link since the
      // index was read (the shard's name was checked lexically then).
      if (is_sharded()) check_inside(std::filesystem::path(s.relative), "weight_map assigns tensors to '" +
                                                                           detail_json::printable(s.relative) + "'");
      auto file = std::make_unique<SafetensorsFile>(s.path);
      for (const std::string& name : s.names) {
        if (!file->contains(name)) {
          fail_index("weight_map assigns tensor '" + detail_json::printable(name) + "' to '" +
                     detail_json::printable(s.relative) + "', but '" + s.path.string() + "' has no tensor '" +
                     detail_json::printable(name) + "'");
        }
      }
      // The other direction: a tensor this shard holds that the index puts
      // in another shard exists twice, and readers disagree on which copy is
      // the weight (oq follows the index; transformers loads every shard's
      // tensors, so the last shard read wins). Tensors the index does not
      // name are left alone, as transformers leaves them (unexpected keys).
      for (const TensorInfo& t : file->tensors()) {
        const auto it = weight_map_.find(t.name);
        if (it != weight_map_.end() && it->second != i) {
          fail_index("'" + s.path.string() + "' holds tensor '" + detail_json::printable(t.name) +
                     "', which weight_map assigns to '" + detail_json::printable(shards_[it->second].relative) +
                     "' (expected each tensor in exactly one shard)");
        }
      }
      s.file = std::move(file);
    }
    return *s.file;
  }

  std::filesystem::path directory_;
  std::filesystem::path index_;
  nlohmann::json index_metadata_;
  mutable std::vector<Shard> shards_;
  std::map<std::string, std::size_t, std::less<>> weight_map_;
  std::unique_ptr<std::mutex> mutex_;
};

}  // namespace oq::io
