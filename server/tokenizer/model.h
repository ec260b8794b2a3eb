// The tokenizer's model stage: turns one pre-tokenized piece into ids. BpeModel (tokenizer.json
// BPE, rank-based merges, as HF runs it) and SpmModel (GGUF SentencePiece vocabularies,
// score-based merges, as llama.cpp runs them) implement it.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

#include "absl/status/status.h"

namespace kvfold::tokenizer_impl {

// Largest token id accepted from a file, so a corrupt id cannot size a huge table.
inline constexpr int64_t kMaxTokenId = (int64_t{1} << 22) - 1;

class Model {
 public:
  virtual ~Model() = default;

  // Appends the ids of one pre-tokenized piece.
  virtual void Tokenize(std::string_view word, std::vector<int32_t>* ids) const = 0;

  virtual std::optional<int32_t> TokenToId(std::string_view token) const = 0;
  virtual std::optional<std::string_view> IdToToken(int32_t id) const = 0;
  // One past the largest id.
  virtual int32_t NumIds() const = 0;
  // Distinct token strings (HF's get_vocab_size(), which places new added tokens).
  virtual size_t VocabSize() const = 0;

  // From now on pieces are raw bytes, each standing for its byte-level character (the ByteLevel
  // pre-tokenizer's mapping, done here without building the mapped string).
  virtual absl::Status SetByteLevelInput() {
    return absl::UnimplementedError("this model cannot follow a ByteLevel pre-tokenizer");
  }
};

}  // namespace kvfold::tokenizer_impl
