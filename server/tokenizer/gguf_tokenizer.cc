#include "server/tokenizer/gguf_tokenizer.h"

#include <set>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "glog/logging.h"
#include "server/tokenizer/bpe_model.h"
#include "server/tokenizer/byte_level.h"
#include "server/tokenizer/pipeline_tokenizer.h"
#include "server/tokenizer/spm_model.h"
#include "worker/gguf_metadata.h"
#include "worker/status_macros.h"

namespace kvfold::tokenizer_impl {
namespace {

// llama.cpp's token types (tokenizer.ggml.token_type).
constexpr int64_t kUnknownType = 2;
constexpr int64_t kControlType = 3;
constexpr int64_t kUserDefinedType = 4;

enum class Split { kGpt2, kLlama3, kQwen2, kDigitsThenGpt2 };

// llama.cpp's pre-tokenizer names, grouped by the regexes they select.
Split SplitFor(const std::string& pre) {
  static const std::set<std::string, std::less<>> kLlama3 = {
      "llama3",  "llama-v3", "llama-bpe", "falcon3", "falcon-h1",
      "pixtral", "midm-2.0", "lfm2",      "dbrx",    "smaug-bpe"};
  static const std::set<std::string, std::less<>> kQwen2 = {"qwen2", "deepseek-r1-qwen", "megrez"};
  static const std::set<std::string, std::less<>> kDigits = {
      "smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva"};
  if (kLlama3.contains(pre)) return Split::kLlama3;
  if (kQwen2.contains(pre)) return Split::kQwen2;
  if (kDigits.contains(pre)) return Split::kDigitsThenGpt2;
  if (!pre.empty() && pre != "gpt-2" && pre != "default" && pre != "gpt2") {
    LOG(WARNING) << "GGUF tokenizer.ggml.pre \"" << pre
                 << "\" is not known here; splitting with GPT-2's regex";
  }
  return Split::kGpt2;
}

std::unique_ptr<PreTokenizer> MakeGguf2PreTokenizer(Split split) {
  std::vector<std::unique_ptr<PreTokenizer>> steps;
  switch (split) {
    case Split::kGpt2:
      return MakeByteLevelPreTokenizer(/*add_prefix_space=*/false, /*use_regex=*/true);
    case Split::kDigitsThenGpt2:
      steps.push_back(MakeIndividualDigits());
      steps.push_back(MakeByteLevelPreTokenizer(false, true));
      break;
    case Split::kLlama3:
    case Split::kQwen2:
      steps.push_back(
          MakeKnownSplit(split == Split::kLlama3 ? KnownPattern::kLlama3 : KnownPattern::kQwen2));
      steps.push_back(MakeByteLevelPreTokenizer(false, false));
      break;
  }
  return MakePreTokenizerSequence(std::move(steps));
}

// What the pipeline needs from the file besides the model.
struct GgufVocab {
  std::vector<std::string> tokens;
  std::vector<int64_t> types;  // empty when the file has none
  std::optional<int32_t> bos, eos, unk;
  bool add_bos = false;
  bool add_eos = false;
};

absl::StatusOr<std::optional<int32_t>> OptionalId(const GgufFile& file, std::string_view key,
                                                  size_t num_tokens) {
  if (file.Find(key) == nullptr) return std::optional<int32_t>();
  KVFOLD_ASSIGN_OR_RETURN(const uint64_t id, file.GetUint(key));
  if (id >= num_tokens) {
    // llama.cpp tolerates out-of-range ids (e.g. a padding id of -1 stored unsigned): ignore them.
    LOG(WARNING) << file.path() << ": " << key << " = " << id << " is not a token; ignored";
    return std::optional<int32_t>();
  }
  return std::optional<int32_t>(static_cast<int32_t>(id));
}

absl::StatusOr<bool> OptionalBool(const GgufFile& file, std::string_view key, bool fallback) {
  if (file.Find(key) == nullptr) return fallback;
  return file.GetBool(key);
}

absl::StatusOr<GgufVocab> ReadVocab(const GgufFile& file, bool llama) {
  GgufVocab vocab;
  KVFOLD_ASSIGN_OR_RETURN(const GgufArray* tokens,
                          file.GetArray("tokenizer.ggml.tokens", GgufType::kString));
  vocab.tokens = tokens->strings;
  if (file.Find("tokenizer.ggml.token_type") != nullptr) {
    KVFOLD_ASSIGN_OR_RETURN(const GgufArray* types,
                            file.GetArray("tokenizer.ggml.token_type", GgufType::kInt32));
    if (types->ints.size() != vocab.tokens.size()) {
      return absl::InvalidArgumentError(absl::StrFormat("%s: %d token types for %d tokens",
                                                        file.path(), types->ints.size(),
                                                        vocab.tokens.size()));
    }
    vocab.types = types->ints;
  }
  const size_t n = vocab.tokens.size();
  KVFOLD_ASSIGN_OR_RETURN(vocab.bos, OptionalId(file, "tokenizer.ggml.bos_token_id", n));
  KVFOLD_ASSIGN_OR_RETURN(vocab.eos, OptionalId(file, "tokenizer.ggml.eos_token_id", n));
  KVFOLD_ASSIGN_OR_RETURN(vocab.unk, OptionalId(file, "tokenizer.ggml.unknown_token_id", n));
  KVFOLD_ASSIGN_OR_RETURN(vocab.add_bos, OptionalBool(file, "tokenizer.ggml.add_bos_token", llama));
  KVFOLD_ASSIGN_OR_RETURN(vocab.add_eos, OptionalBool(file, "tokenizer.ggml.add_eos_token", false));
  return vocab;
}

// Control/unknown tokens as special added tokens, user-defined ones as plain added tokens. In a
// byte-level vocabulary a "control" token spelled outside the byte alphabet is a llama.cpp
// mislabel, skipped as transformers skips it.
std::vector<AddedToken> AddedTokens(const GgufVocab& vocab, bool byte_level) {
  std::vector<AddedToken> added;
  for (size_t id = 0; id < vocab.types.size(); ++id) {
    const int64_t type = vocab.types[id];
    const bool special = type == kControlType || (!byte_level && type == kUnknownType);
    if (!special && type != kUserDefinedType) continue;
    const std::string& content = vocab.tokens[id];
    if (special && byte_level && !ByteLevelToBytes(content)) continue;
    AddedToken token;
    token.content = content;
    token.id = static_cast<int32_t>(id);
    token.special = special;
    token.normalized = false;
    added.push_back(std::move(token));
  }
  return added;
}

std::unique_ptr<PostProcessor> BosEos(const GgufVocab& vocab) {
  std::vector<int32_t> prefix, suffix;
  if (vocab.add_bos && vocab.bos) prefix.push_back(*vocab.bos);
  if (vocab.add_eos && vocab.eos) suffix.push_back(*vocab.eos);
  return MakeTemplateProcessor(std::move(prefix), std::move(suffix));
}

absl::StatusOr<Pipeline> Gpt2Pipeline(const GgufFile& file, const GgufVocab& vocab) {
  KVFOLD_ASSIGN_OR_RETURN(const GgufArray* merges,
                          file.GetArray("tokenizer.ggml.merges", GgufType::kString));
  std::string pre;
  if (file.Find("tokenizer.ggml.pre") != nullptr) {
    KVFOLD_ASSIGN_OR_RETURN(pre, file.GetString("tokenizer.ggml.pre"));
  }
  Pipeline pipeline;
  KVFOLD_ASSIGN_OR_RETURN(pipeline.model,
                          BpeModel::FromTokensAndMerges(vocab.tokens, merges->strings));
  KVFOLD_RETURN_IF_ERROR(pipeline.model->SetByteLevelInput());
  pipeline.pre_tokenizer = MakeGguf2PreTokenizer(SplitFor(pre));
  pipeline.decoder = MakeByteLevelDecoder();
  pipeline.post_processor = BosEos(vocab);
  KVFOLD_ASSIGN_OR_RETURN(pipeline.added, AddedVocabulary::FromTokens(AddedTokens(vocab, true),
                                                                      nullptr, *pipeline.model));
  return pipeline;
}

absl::StatusOr<Pipeline> LlamaPipeline(const GgufFile& file, const GgufVocab& vocab) {
  KVFOLD_ASSIGN_OR_RETURN(const GgufArray* scores,
                          file.GetArray("tokenizer.ggml.scores", GgufType::kFloat32));
  KVFOLD_ASSIGN_OR_RETURN(const bool add_space_prefix,
                          OptionalBool(file, "tokenizer.ggml.add_space_prefix", true));
  Pipeline pipeline;
  KVFOLD_ASSIGN_OR_RETURN(
      pipeline.model,
      SpmModel::Create(vocab.tokens,
                       std::vector<float>(scores->floats.begin(), scores->floats.end()),
                       vocab.unk));
  pipeline.normalizer = MakeSentencePieceNormalizer(add_space_prefix);
  // Llama 2's tokenizer.json decoder, which transformers also gives GGUF "llama" vocabularies.
  Json decoders =
      Json::array({{{"type", "Replace"}, {"pattern", {{"String", "\u2581"}}}, {"content", " "}},
                   {{"type", "ByteFallback"}},
                   {{"type", "Fuse"}}});
  if (add_space_prefix) {
    decoders.push_back({{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}});
  }
  KVFOLD_ASSIGN_OR_RETURN(pipeline.decoder,
                          MakeDecoder({{"type", "Sequence"}, {"decoders", decoders}}));
  pipeline.post_processor = BosEos(vocab);
  KVFOLD_ASSIGN_OR_RETURN(pipeline.added,
                          AddedVocabulary::FromTokens(AddedTokens(vocab, false),
                                                      pipeline.normalizer.get(), *pipeline.model));
  return pipeline;
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Build(const GgufFile& file) {
  KVFOLD_ASSIGN_OR_RETURN(const std::string model, file.GetString("tokenizer.ggml.model"));
  if (model != "gpt2" && model != "llama") {
    return absl::UnimplementedError(absl::StrFormat(
        "%s: GGUF tokenizer.ggml.model \"%s\" is not supported (gpt2 and llama are)", file.path(),
        model));
  }
  const bool llama = model == "llama";
  KVFOLD_ASSIGN_OR_RETURN(const GgufVocab vocab, ReadVocab(file, llama));
  absl::StatusOr<Pipeline> pipeline =
      llama ? LlamaPipeline(file, vocab) : Gpt2Pipeline(file, vocab);
  if (!pipeline.ok()) {
    const absl::Status& s = pipeline.status();
    return absl::Status(s.code(), absl::StrFormat("%s: %s", file.path(), s.message()));
  }
  SpecialTokenNames names;
  names.from_config = true;
  if (vocab.bos) names.bos = vocab.tokens[*vocab.bos];
  if (vocab.eos) names.eos = vocab.tokens[*vocab.eos];
  return std::make_unique<PipelineTokenizer>(*std::move(pipeline), names);
}

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> TokenizerFromGguf(const std::string& path) {
  KVFOLD_ASSIGN_OR_RETURN(const std::unique_ptr<GgufFile> file, GgufFile::Open(path));
  return Build(*file);
}

}  // namespace kvfold::tokenizer_impl
