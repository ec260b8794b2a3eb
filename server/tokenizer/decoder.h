// tokenizer.json "decoder" stage: turns token strings back into text. Each decoder rewrites the
// list of token strings (HF's decode_chain); the pipeline joins the result. Supported:
// Sequence, Replace (string pattern), ByteFallback, Fuse, Strip, Metaspace, ByteLevel.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/tokenizer/json_util.h"

namespace kvfold::tokenizer_impl {

class Decoder {
 public:
  virtual ~Decoder() = default;
  virtual void DecodeChain(std::vector<std::string>* tokens) const = 0;
  // Whether the text of `token` can depend on the tokens after it: a <0xNN> piece that
  // ByteFallback joins with its neighbours, or a byte-level token whose bytes are not whole UTF-8.
  // Streaming holds such tokens back.
  virtual bool DecodesWithNext(std::string_view token) const { return false; }
};

// `config` is the non-null "decoder" value.
absl::StatusOr<std::unique_ptr<Decoder>> MakeDecoder(const Json& config);

// HF's ByteLevel decoder: tokens back to bytes through the byte-level alphabet (a token with a
// character outside it stays as it is), then the bytes as lossy UTF-8 (see AppendUtf8Lossy).
std::unique_ptr<Decoder> MakeByteLevelDecoder();

// The byte a "<0xNN>" piece stands for, as HF's ByteFallback decoder reads it.
std::optional<unsigned char> BytePieceValue(std::string_view token);

}  // namespace kvfold::tokenizer_impl
