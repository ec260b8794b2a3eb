// The Tokenizer assembled from tokenizer.json's stages: added tokens are split off the raw text,
// the rest is normalized, pre-tokenized and run through the model; the post-processor adds
// special tokens. Decoding looks ids up and runs the decoder chain.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "server/tokenizer/added_vocabulary.h"
#include "server/tokenizer/decoder.h"
#include "server/tokenizer/model.h"
#include "server/tokenizer/normalizer.h"
#include "server/tokenizer/post_processor.h"
#include "server/tokenizer/pre_tokenizer.h"
#include "server/tokenizer/string_map.h"
#include "server/tokenizer/tokenizer.h"

namespace kvfold::tokenizer_impl {

// The stages; every one but the model may be absent (null in tokenizer.json).
struct Pipeline {
  std::unique_ptr<Normalizer> normalizer;
  std::unique_ptr<PreTokenizer> pre_tokenizer;
  std::unique_ptr<Model> model;
  AddedVocabulary added;
  std::unique_ptr<PostProcessor> post_processor;
  std::unique_ptr<Decoder> decoder;
};

// Token names from tokenizer_config.json. Where none was read, bos/eos are inferred instead.
struct SpecialTokenNames {
  bool from_config = false;
  std::optional<std::string> bos;  // null in the config: the model has none (e.g. Qwen's bos)
  std::optional<std::string> eos;
};

class PipelineTokenizer : public Tokenizer {
 public:
  PipelineTokenizer(Pipeline pipeline, const SpecialTokenNames& names);

  absl::StatusOr<std::vector<int32_t>> Encode(std::string_view text,
                                              bool add_special_tokens) const override;
  absl::StatusOr<std::string> Decode(absl::Span<const int32_t> ids,
                                     bool skip_special_tokens) const override;

  int32_t vocab_size() const override { return static_cast<int32_t>(id_to_token_.size()); }
  std::optional<int32_t> TokenToId(std::string_view token) const override;
  std::optional<std::string_view> IdToToken(int32_t id) const override;
  std::optional<int32_t> bos_id() const override { return bos_id_; }
  std::optional<int32_t> eos_id() const override { return eos_id_; }
  bool IsSpecial(int32_t id) const override;
  bool DecodesWithNext(int32_t id) const override;

 private:
  void BuildIdTables();
  void ResolveSpecialIds(const SpecialTokenNames& names);
  // Encodes text between raw added tokens; `at_origin`: it starts the input.
  void EncodePlain(std::string_view raw, bool at_origin, std::vector<int32_t>* ids) const;

  Pipeline pipeline_;
  // Index = id; nullopt where neither the model nor the added tokens define the id.
  std::vector<std::optional<std::string>> id_to_token_;
  std::vector<bool> special_;     // index = id; HF's is_special_token of its string
  std::vector<bool> byte_piece_;  // index = id; a <0xNN> piece that the decoder joins
  StringMap<int32_t> added_ids_;  // added token content -> id
  std::optional<int32_t> bos_id_;
  std::optional<int32_t> eos_id_;
};

}  // namespace kvfold::tokenizer_impl
