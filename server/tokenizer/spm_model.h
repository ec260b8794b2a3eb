// A SentencePiece vocabulary from a GGUF file (tokenizer.ggml.model = "llama"), tokenized as
// llama.cpp's SPM tokenizer does: start from the characters, repeatedly merge the adjacent pair
// whose concatenation is the vocabulary token with the highest score (leftmost first among equal
// scores), and spell what never became a token as <0xNN> byte pieces. Scores, not merge ranks,
// decide, which is why a GGUF vocabulary needs this model rather than BpeModel.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "server/tokenizer/model.h"
#include "server/tokenizer/string_map.h"

namespace kvfold::tokenizer_impl {

class SpmModel : public Model {
 public:
  // `tokens` and `scores` by id (same length); a repeated token keeps its last id, as in
  // llama.cpp. `unk_id` stands for bytes with no <0xNN> piece.
  static absl::StatusOr<std::unique_ptr<SpmModel>> Create(std::vector<std::string> tokens,
                                                          std::vector<float> scores,
                                                          std::optional<int32_t> unk_id);

  void Tokenize(std::string_view word, std::vector<int32_t>* ids) const override;
  std::optional<int32_t> TokenToId(std::string_view token) const override;
  std::optional<std::string_view> IdToToken(int32_t id) const override;
  int32_t NumIds() const override { return static_cast<int32_t>(tokens_.size()); }
  size_t VocabSize() const override { return vocab_.size(); }

 private:
  SpmModel() = default;

  std::vector<std::string> tokens_;
  std::vector<float> scores_;
  StringMap<int32_t> vocab_;
  std::array<std::optional<int32_t>, 256> byte_ids_;
  std::optional<int32_t> unk_id_;
};

}  // namespace kvfold::tokenizer_impl
