// tokenizer.json "decoder" stage: turns token strings back into text. Each decoder rewrites the
// list of token strings (HF's decode_chain); the pipeline joins the result. Supported:
// Sequence, Replace (string pattern), ByteFallback, Fuse, Strip, Metaspace. ByteLevel (GPT-2,
// Llama 3, Qwen) is UnimplementedError for now.
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
  // Whether <0xNN> pieces are joined into UTF-8 here, so a piece's text depends on its
  // neighbours (streaming holds such pieces back).
  virtual bool JoinsBytePieces() const { return false; }
};

// `config` is the non-null "decoder" value.
absl::StatusOr<std::unique_ptr<Decoder>> MakeDecoder(const Json& config);

// The byte a "<0xNN>" piece stands for, as HF's ByteFallback decoder reads it.
std::optional<unsigned char> BytePieceValue(std::string_view token);

}  // namespace kvfold::tokenizer_impl
