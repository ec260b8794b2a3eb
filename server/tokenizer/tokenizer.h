// Text <-> token ids for a model, read from Hugging Face's tokenizer.json. Native C++, no Python
// at serving time. Families are assembled from tokenizer.json's pipeline stages (normalizer,
// pre-tokenizer, model, post-processor, decoder): SentencePiece-style BPE with byte fallback
// (Llama 2, Mistral, stories260K) and byte-level BPE (GPT-2, SmolLM2, Llama 3, Qwen 2/3). GGUF
// files' embedded vocabularies (gpt2 and llama types) build the same pipeline.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace kvfold {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // `path`: a tokenizer.json file, a .gguf file (its embedded vocabulary, see gguf_tokenizer.h),
  // or a folder holding a tokenizer.json (else exactly one .gguf). For tokenizer.json, bos/eos
  // come from a tokenizer_config.json beside it when there is one ("bos_token"/"eos_token").
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromFile(const std::string& path);
  // `source` names the origin in errors. Without a tokenizer_config.json, bos is the first special
  // token the post-processor adds (else "<s>") and eos is "</s>", where the vocabulary has them.
  // Components this version does not implement give UnimplementedError naming the component.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromJson(std::string_view json,
                                                             std::string_view source);

  // Ids exactly as Hugging Face `tokenizers` gives them (`encode(text, add_special_tokens)`).
  // Special tokens written in the text are matched as single tokens (HF's default). Invalid
  // UTF-8 is an InvalidArgument error (HF cannot be handed such text at all).
  virtual absl::StatusOr<std::vector<int32_t>> Encode(std::string_view text,
                                                      bool add_special_tokens) const = 0;
  // Text as HF `decode(ids, skip_special_tokens)` gives it. Ids out of range: InvalidArgument
  // (HF silently drops them).
  virtual absl::StatusOr<std::string> Decode(absl::Span<const int32_t> ids,
                                             bool skip_special_tokens) const = 0;

  virtual int32_t vocab_size() const = 0;
  virtual std::optional<int32_t> TokenToId(std::string_view token) const = 0;
  virtual std::optional<std::string_view> IdToToken(int32_t id) const = 0;
  virtual std::optional<int32_t> bos_id() const = 0;
  virtual std::optional<int32_t> eos_id() const = 0;
  virtual bool IsSpecial(int32_t id) const = 0;
  // Whether the text `id` decodes to can still change with the ids after it: SentencePiece byte
  // pieces (<0xNN>), whose runs decode together as UTF-8. Streaming holds these back.
  virtual bool DecodesWithNext(int32_t id) const = 0;
};

// Streaming detokenization: each Push returns the text the new token adds, never a split UTF-8
// sequence, and the concatenation of everything returned (including Finish) equals
// Decode(all ids). Prefix ids (e.g. the prompt) give context without being emitted: then the
// concatenation equals Decode(prefix + ids) less its leading Decode(prefix) (so a generated
// "▁world" after a prompt streams as " world"), unless the prefix ends inside a byte-piece run.
// Byte pieces are held until the run ends, since a later byte can turn the whole run into U+FFFD.
// Each Push decodes only a short window of recent ids.
class IncrementalDetokenizer {
 public:
  IncrementalDetokenizer(const Tokenizer& tokenizer, bool skip_special_tokens,
                         absl::Span<const int32_t> prefix_ids = {});
  absl::StatusOr<std::string> Push(int32_t id);
  // Whatever is still held back (e.g. an incomplete UTF-8 sequence at the end, as U+FFFD).
  absl::StatusOr<std::string> Finish();

 private:
  // Decodes the window, emits what the new ids add and slides the window; `final` also flushes
  // text that may still be completed.
  absl::StatusOr<std::string> Emit(bool final);

  const Tokenizer& tokenizer_;
  bool skip_special_tokens_;
  std::vector<int32_t> ids_;
  size_t prefix_offset_ = 0;  // ids_[prefix_offset_, read_offset_) were decoded to emit text
  size_t read_offset_ = 0;
};

}  // namespace kvfold
