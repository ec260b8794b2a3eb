#include "server/tokenizer/pipeline_tokenizer.h"

#include <algorithm>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "glog/logging.h"
#include "server/tokenizer/utf8.h"

namespace kvfold::tokenizer_impl {

PipelineTokenizer::PipelineTokenizer(Pipeline pipeline, const SpecialTokenNames& names)
    : pipeline_(std::move(pipeline)) {
  CHECK(pipeline_.model != nullptr);
  BuildIdTables();
  ResolveSpecialIds(names);
}

void PipelineTokenizer::BuildIdTables() {
  const Model& model = *pipeline_.model;
  int32_t size = model.NumIds();
  for (const AddedToken& token : pipeline_.added.tokens()) size = std::max(size, token.id + 1);
  id_to_token_.assign(size, std::nullopt);
  for (int32_t id = 0; id < model.NumIds(); ++id) {
    if (std::optional<std::string_view> token = model.IdToToken(id)) id_to_token_[id] = *token;
  }
  // Added tokens take precedence, as in HF's id_to_token; a normalized token's string wins over
  // a plain one for the same id, as HF's normalized cache does.
  StringSet special_contents;
  std::vector<bool> normalized_string(size, false);
  for (const AddedToken& token : pipeline_.added.tokens()) {
    const bool normalized = token.id_string != token.content;
    if (normalized || !normalized_string[token.id]) id_to_token_[token.id] = token.id_string;
    if (normalized) normalized_string[token.id] = true;
    added_ids_.try_emplace(token.content, token.id);
    if (token.special) special_contents.insert(token.content);
  }
  special_.assign(size, false);
  byte_piece_.assign(size, false);
  for (int32_t id = 0; id < size; ++id) {
    if (!id_to_token_[id]) continue;
    special_[id] = special_contents.contains(*id_to_token_[id]);
    byte_piece_[id] =
        pipeline_.decoder != nullptr && pipeline_.decoder->DecodesWithNext(*id_to_token_[id]);
  }
}

void PipelineTokenizer::ResolveSpecialIds(const SpecialTokenNames& names) {
  auto lookup = [this](const std::optional<std::string>& name) -> std::optional<int32_t> {
    if (!name) return std::nullopt;
    std::optional<int32_t> id = TokenToId(*name);
    if (!id) {
      LOG(WARNING) << "tokenizer_config.json names token \"" << *name
                   << "\", which is not in the vocabulary; ignored";
    }
    return id;
  };
  if (names.from_config) {
    bos_id_ = lookup(names.bos);
    eos_id_ = lookup(names.eos);
    return;
  }
  if (pipeline_.post_processor != nullptr) bos_id_ = pipeline_.post_processor->FirstPrefixId();
  if (!bos_id_) bos_id_ = TokenToId("<s>");
  eos_id_ = TokenToId("</s>");
}

std::optional<int32_t> PipelineTokenizer::TokenToId(std::string_view token) const {
  const auto it = added_ids_.find(token);
  if (it != added_ids_.end()) return it->second;
  return pipeline_.model->TokenToId(token);
}

std::optional<std::string_view> PipelineTokenizer::IdToToken(int32_t id) const {
  if (id < 0 || id >= vocab_size() || !id_to_token_[id]) return std::nullopt;
  return std::string_view(*id_to_token_[id]);
}

bool PipelineTokenizer::IsSpecial(int32_t id) const {
  return id >= 0 && id < vocab_size() && special_[id];
}

bool PipelineTokenizer::DecodesWithNext(int32_t id) const {
  return id >= 0 && id < vocab_size() && byte_piece_[id];
}

absl::StatusOr<std::vector<int32_t>> PipelineTokenizer::Encode(std::string_view text,
                                                               bool add_special_tokens) const {
  if (std::optional<size_t> bad = FirstInvalidUtf8Offset(text)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("text to tokenize is not valid UTF-8 (at byte %d)", *bad));
  }
  std::vector<int32_t> ids;
  for (const Segment& segment : pipeline_.added.SplitRaw(text)) {
    if (segment.id) {
      ids.push_back(*segment.id);
      continue;
    }
    EncodePlain(text.substr(segment.begin, segment.end - segment.begin), segment.begin == 0, &ids);
  }
  if (add_special_tokens && pipeline_.post_processor != nullptr) {
    pipeline_.post_processor->AddSpecialTokens(&ids);
  }
  return ids;
}

void PipelineTokenizer::EncodePlain(std::string_view raw, bool at_origin,
                                    std::vector<int32_t>* ids) const {
  std::string normalized(raw);
  if (pipeline_.normalizer != nullptr) pipeline_.normalizer->Normalize(&normalized);
  std::vector<Piece> pieces;
  for (const Segment& segment : pipeline_.added.SplitNormalized(normalized)) {
    if (segment.id) {
      ids->push_back(*segment.id);
      continue;
    }
    pieces.assign(1, Piece{normalized.substr(segment.begin, segment.end - segment.begin),
                           at_origin && segment.begin == 0});
    if (pipeline_.pre_tokenizer != nullptr) pipeline_.pre_tokenizer->PreTokenize(&pieces);
    for (const Piece& piece : pieces) pipeline_.model->Tokenize(piece.text, ids);
  }
}

absl::StatusOr<std::string> PipelineTokenizer::Decode(absl::Span<const int32_t> ids,
                                                      bool skip_special_tokens) const {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (const int32_t id : ids) {
    const std::optional<std::string_view> token = IdToToken(id);
    if (!token) {
      return absl::InvalidArgumentError(
          absl::StrFormat("token id %d is not in the vocabulary (size %d)", id, vocab_size()));
    }
    if (skip_special_tokens && special_[id]) continue;
    tokens.emplace_back(*token);
  }
  // Without a decoder HF joins the tokens with spaces.
  if (pipeline_.decoder == nullptr) return absl::StrJoin(tokens, " ");
  pipeline_.decoder->DecodeChain(&tokens);
  return absl::StrJoin(tokens, "");
}

}  // namespace kvfold::tokenizer_impl
