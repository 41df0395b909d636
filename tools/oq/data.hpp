// tools/oq/data.hpp: calibration and evaluation data for the oq tool, as
// sequences of token ids.
//
// Three inputs:
//   FILE.npy   pre-tokenized ids, integer dtype: 1-D (one stream, cut into
//              sequences of --seq-len) or 2-D (each row one sequence, used as is)
//   text file  through the model's own SentencePiece tokenizer.model (LLaMA-1/2)
//              when the tool was built with SentencePiece, BOS prepended once
//              to the stream as the papers' WikiText-2 evaluation does
//              (GPTQ's datautils: the whole test split tokenized at once);
//              or as bytes for a byte-level model (vocab_size = 256, example 03)
// A stream is cut into consecutive, non-overlapping sequences of seq_len ids;
// a shorter tail is dropped (as the papers' evaluation does), so every
// sequence has the same length.
#pragma once

#include <oq/io/npy.hpp>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>
#include <vector>

#ifdef OQ_TOOL_HAS_SENTENCEPIECE
#include <sentencepiece_processor.h>
#endif

namespace oq_tool {

using Sequence = std::vector<std::int32_t>;

/// Token ids read from a file: one stream, or sequences given as rows.
struct TokenData {
  std::vector<Sequence> rows;  ///< 2-D .npy: the sequences; otherwise one row, the stream
  bool pre_split = false;      ///< rows are sequences already (2-D .npy)
  std::string source;          ///< how the ids were made, for the report
};

inline bool sentencepiece_available() {
#ifdef OQ_TOOL_HAS_SENTENCEPIECE
  return true;
#else
  return false;
#endif
}

namespace detail_data {

inline std::int64_t integer_at(const oq::io::NpyArray& a, std::size_t i) {
  const std::byte* p = a.data.data() + i * oq::io::dtype_size(a.dtype);
  auto load = [p]<class T>(T) {
    T v;
    std::memcpy(&v, p, sizeof v);
    return static_cast<std::int64_t>(v);
  };
  switch (a.dtype) {
    case oq::io::DType::kU8: return load(std::uint8_t{});
    case oq::io::DType::kI8: return load(std::int8_t{});
    case oq::io::DType::kI16: return load(std::int16_t{});
    case oq::io::DType::kU16: return load(std::uint16_t{});
    case oq::io::DType::kI32: return load(std::int32_t{});
    case oq::io::DType::kU32: return load(std::uint32_t{});
    case oq::io::DType::kI64: return load(std::int64_t{});
    default: break;
  }
  throw std::invalid_argument("token ids must have a signed or unsigned integer dtype of at most 32 bits, or int64, got " +
                              std::string(oq::io::dtype_name(a.dtype)));
}

inline std::int32_t checked_id(std::int64_t v, std::int64_t vocab, const std::string& where, std::size_t i) {
  if (v < 0 || v >= vocab) {
    throw std::invalid_argument(where + ": token id " + std::to_string(v) + " at index " + std::to_string(i) +
                                " is outside the model's vocabulary [0, " + std::to_string(vocab) + ")");
  }
  return static_cast<std::int32_t>(v);
}

inline std::string read_text(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::invalid_argument("data: cannot open '" + path.string() + "'");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) throw std::runtime_error("data: error reading '" + path.string() + "'");
  return text;
}

}  // namespace detail_data

/// Whether `path` starts with numpy's magic "\x93NUMPY" (ids saved under
/// any name are read as ids, never as text).
inline bool is_npy_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  char magic[6] = {};
  in.read(magic, sizeof magic);
  return in.gcount() == 6 && std::memcmp(magic, "\x93NUMPY", 6) == 0;
}

/// Reads `path` as token ids of a model with `vocab_size` ids; text goes
/// through `tokenizer_model` (a SentencePiece model file; empty path: none)
/// with BOS `bos_id` (< 0: none) prepended, or bytes when vocab_size == 256.
inline TokenData load_tokens(const std::filesystem::path& path, std::int64_t vocab_size,
                             const std::filesystem::path& tokenizer_model = {}, std::int64_t bos_id = -1) {
  const std::string where = "data '" + path.string() + "'";
  if (!std::filesystem::is_regular_file(path)) throw std::invalid_argument(where + ": no such file");
  TokenData data;
  if (is_npy_file(path)) {
    const oq::io::NpyArray a = oq::io::read_npy(path);
    for (std::size_t d : a.shape) {
      if (d == 0) throw std::invalid_argument(where + ": token ids must not have an empty dimension");
    }
    if (a.shape.size() != 1 && a.shape.size() != 2) {
      throw std::invalid_argument(where + ": token ids must be 1-D (a stream) or 2-D (sequences), got " +
                                  std::to_string(a.shape.size()) + " dimensions");
    }
    const std::size_t rows = a.shape.size() == 2 ? a.shape[0] : 1;
    const std::size_t cols = a.shape.back();
    data.pre_split = a.shape.size() == 2;
    data.rows.assign(rows, Sequence(cols));
    for (std::size_t r = 0; r < rows; ++r) {
      for (std::size_t c = 0; c < cols; ++c) {
        const std::size_t i = r * cols + c;
        data.rows[r][c] = detail_data::checked_id(detail_data::integer_at(a, i), vocab_size, where, i);
      }
    }
    data.source = "pre-tokenized ids (" + std::string(oq::io::dtype_name(a.dtype)) + ")";
    return data;
  }
  const std::string text = detail_data::read_text(path);
  if (!tokenizer_model.empty()) {
#ifdef OQ_TOOL_HAS_SENTENCEPIECE
    sentencepiece::SentencePieceProcessor sp;
    const auto status = sp.Load(tokenizer_model.string());
    if (!status.ok()) {
      throw std::invalid_argument("tokenizer '" + tokenizer_model.string() + "': " + status.ToString());
    }
    std::vector<int> ids;
    const auto encoded = sp.Encode(text, &ids);
    if (!encoded.ok()) throw std::invalid_argument(where + ": SentencePiece: " + encoded.ToString());
    Sequence stream;
    stream.reserve(ids.size() + 1);
    if (bos_id >= 0) stream.push_back(detail_data::checked_id(bos_id, vocab_size, where + " (bos_token_id)", 0));
    for (std::size_t i = 0; i < ids.size(); ++i) stream.push_back(detail_data::checked_id(ids[i], vocab_size, where, i));
    data.rows.push_back(std::move(stream));
    data.source = "text through SentencePiece " + tokenizer_model.filename().string();
    return data;
#else
    (void)bos_id;
    throw std::invalid_argument(where + ": the model has a SentencePiece tokenizer.model, but this oq was built "
                                "without SentencePiece (install libsentencepiece-dev and rebuild), or give ids as .npy");
#endif
  }
  if (vocab_size != 256) {
    throw std::invalid_argument(where + ": text needs the model's tokenizer.model (SentencePiece) or a byte-level "
                                "model (vocab_size 256; this one has " + std::to_string(vocab_size) +
                                "); give pre-tokenized ids as .npy instead");
  }
  Sequence bytes(text.size());
  for (std::size_t i = 0; i < text.size(); ++i) bytes[i] = static_cast<unsigned char>(text[i]);
  data.rows.push_back(std::move(bytes));
  data.source = "text as bytes (byte-level model)";
  return data;
}

/// At most `max_sequences` sequences of `seq_len` ids (0: all there are),
/// taken from the start of the data. A 2-D .npy keeps its rows (their length
/// must be ≥ 2); a stream is cut into consecutive pieces of seq_len.
inline std::vector<Sequence> make_sequences(const TokenData& data, std::size_t seq_len, std::size_t max_sequences,
                                            const std::string& what) {
  std::vector<Sequence> out;
  auto full = [&] { return max_sequences != 0 && out.size() >= max_sequences; };
  if (data.pre_split) {
    for (const Sequence& row : data.rows) {
      if (full()) break;
      if (row.size() < 2) throw std::invalid_argument(what + ": sequences need at least 2 tokens");
      out.push_back(row);
    }
  } else {
    if (seq_len < 2) throw std::invalid_argument(what + ": --seq-len must be >= 2, got " + std::to_string(seq_len));
    const Sequence& s = data.rows.front();
    for (std::size_t begin = 0; begin + seq_len <= s.size() && !full(); begin += seq_len) {
      out.emplace_back(s.begin() + static_cast<std::ptrdiff_t>(begin),
                       s.begin() + static_cast<std::ptrdiff_t>(begin + seq_len));
    }
  }
  if (out.empty()) {
    throw std::invalid_argument(what + ": fewer than --seq-len = " + std::to_string(seq_len) +
                                " tokens, not one whole sequence");
  }
  return out;
}

}  // namespace oq_tool
