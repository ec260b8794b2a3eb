// Tokenizers built from the vocabulary a GGUF file embeds (tokenizer.ggml.*), so a model can be
// served from its .gguf alone. "gpt2" vocabularies become byte-level BPE with the split regex
// that tokenizer.ggml.pre names (as llama.cpp maps the names); "llama" vocabularies become
// llama.cpp's score-based SentencePiece tokenizer (spm_model.h) with SentencePiece whitespace
// handling and byte-fallback decoding. Control (and unknown) tokens are special added tokens,
// user-defined ones plain added tokens; BOS/EOS are added where add_bos_token/add_eos_token say
// (absent: BOS for "llama", nothing for "gpt2", as transformers reads GGUF files).
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "server/tokenizer/tokenizer.h"

namespace kvfold::tokenizer_impl {

absl::StatusOr<std::unique_ptr<Tokenizer>> TokenizerFromGguf(const std::string& path);

}  // namespace kvfold::tokenizer_impl
