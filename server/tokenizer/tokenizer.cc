// Tokenizer factories: read tokenizer.json (and tokenizer_config.json beside it) and assemble the
// pipeline. No exception escapes: JSON errors become absl::Status.
#include "server/tokenizer/tokenizer.h"

#include <filesystem>
#include <fstream>
#include <sstream>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "glog/logging.h"
#include "server/tokenizer/bpe_model.h"
#include "server/tokenizer/gguf_tokenizer.h"
#include "server/tokenizer/json_util.h"
#include "server/tokenizer/pipeline_tokenizer.h"

namespace kvfold {
namespace {

using tokenizer_impl::Json;
using tokenizer_impl::Pipeline;
using tokenizer_impl::SpecialTokenNames;

absl::StatusOr<std::string> ReadFile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrFormat("cannot open %s", path.string()));
  std::ostringstream contents;
  contents << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrFormat("cannot read %s", path.string()));
  return std::move(contents).str();
}

// Builds an optional stage from member `key` of the tokenizer.json root.
template <typename Stage, typename Factory>
absl::Status BuildStage(const Json& root, std::string_view key, Factory factory,
                        std::unique_ptr<Stage>* stage) {
  const Json* config = tokenizer_impl::FindMember(root, key);
  if (config == nullptr) return absl::OkStatus();
  absl::StatusOr<std::unique_ptr<Stage>> built = factory(*config);
  if (!built.ok()) return built.status();
  *stage = *std::move(built);
  return absl::OkStatus();
}

absl::StatusOr<Pipeline> BuildPipeline(const Json& root) {
  if (!root.is_object()) return absl::InvalidArgumentError("the root must be a JSON object");
  for (const char* key : {"truncation", "padding"}) {
    if (tokenizer_impl::FindMember(root, key) != nullptr) {
      LOG(WARNING) << "tokenizer.json sets \"" << key << "\"; the server ignores it";
    }
  }
  Pipeline pipeline;
  const Json* model = tokenizer_impl::FindMember(root, "model");
  if (model == nullptr) return absl::InvalidArgumentError("missing \"model\"");
  absl::StatusOr<std::unique_ptr<tokenizer_impl::BpeModel>> bpe =
      tokenizer_impl::BpeModel::FromJson(*model);
  if (!bpe.ok()) return bpe.status();
  pipeline.model = *std::move(bpe);
  absl::Status status =
      BuildStage(root, "normalizer", tokenizer_impl::MakeNormalizer, &pipeline.normalizer);
  if (status.ok()) {
    status = BuildStage(root, "pre_tokenizer", tokenizer_impl::MakePreTokenizer,
                        &pipeline.pre_tokenizer);
  }
  if (status.ok()) {
    status = BuildStage(root, "post_processor", tokenizer_impl::MakePostProcessor,
                        &pipeline.post_processor);
  }
  if (status.ok()) {
    status = BuildStage(root, "decoder", tokenizer_impl::MakeDecoder, &pipeline.decoder);
  }
  if (status.ok() && pipeline.pre_tokenizer != nullptr &&
      pipeline.pre_tokenizer->MapsToByteLevel()) {
    status = pipeline.model->SetByteLevelInput();
  }
  if (!status.ok()) return status;
  absl::StatusOr<tokenizer_impl::AddedVocabulary> added = tokenizer_impl::AddedVocabulary::FromJson(
      tokenizer_impl::FindMember(root, "added_tokens"), pipeline.normalizer.get(), *pipeline.model);
  if (!added.ok()) return added.status();
  pipeline.added = *std::move(added);
  return pipeline;
}

// "bos_token"/"eos_token" of tokenizer_config.json: a string or {"content": ...}.
absl::StatusOr<std::optional<std::string>> ConfigTokenName(const Json& config,
                                                           std::string_view key) {
  const Json* value = tokenizer_impl::FindMember(config, key);
  if (value == nullptr) return std::optional<std::string>();
  if (value->is_string()) return std::optional<std::string>(value->get<std::string>());
  absl::StatusOr<std::string> content = tokenizer_impl::GetString(
      *value, "content", absl::StrFormat("tokenizer_config.json %s", key));
  if (!content.ok()) return content.status();
  return std::optional<std::string>(*std::move(content));
}

absl::StatusOr<SpecialTokenNames> ReadSpecialTokenNames(const std::filesystem::path& path) {
  absl::StatusOr<std::string> text = ReadFile(path);
  if (!text.ok()) return text.status();
  absl::StatusOr<Json> config = tokenizer_impl::ParseJson(*text, path.string());
  if (!config.ok()) return config.status();
  SpecialTokenNames names;
  names.from_config = true;
  absl::StatusOr<std::optional<std::string>> bos = ConfigTokenName(*config, "bos_token");
  if (!bos.ok()) return bos.status();
  absl::StatusOr<std::optional<std::string>> eos = ConfigTokenName(*config, "eos_token");
  if (!eos.ok()) return eos.status();
  names.bos = *std::move(bos);
  names.eos = *std::move(eos);
  return names;
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Build(std::string_view json, std::string_view source,
                                                 const SpecialTokenNames& names) {
  absl::StatusOr<Json> root = tokenizer_impl::ParseJson(json, source);
  if (!root.ok()) return root.status();
  absl::StatusOr<Pipeline> pipeline;
  try {
    pipeline = BuildPipeline(*root);
  } catch (const Json::exception& e) {  // a safety net: the readers check types first
    pipeline = absl::InvalidArgumentError(e.what());
  }
  if (!pipeline.ok()) {
    const absl::Status& status = pipeline.status();
    return absl::Status(status.code(), absl::StrFormat("%s: %s", source, status.message()));
  }
  return std::make_unique<tokenizer_impl::PipelineTokenizer>(*std::move(pipeline), names);
}

bool IsGguf(const std::filesystem::path& file) {
  if (file.extension() == ".gguf") return true;
  std::ifstream in(file, std::ios::binary);
  char magic[4] = {};
  return in.read(magic, 4) && std::string_view(magic, 4) == "GGUF";
}

// A folder stands for its tokenizer.json, or else for its only .gguf file.
absl::StatusOr<std::filesystem::path> ResolveTokenizerFile(const std::string& path) {
  std::filesystem::path file(path);
  std::error_code error;
  if (!std::filesystem::is_directory(file, error)) return file;
  if (std::filesystem::exists(file / "tokenizer.json", error)) return file / "tokenizer.json";
  std::vector<std::filesystem::path> ggufs;
  for (const auto& entry : std::filesystem::directory_iterator(file, error)) {
    if (entry.path().extension() == ".gguf") ggufs.push_back(entry.path());
  }
  if (ggufs.size() == 1) return ggufs[0];
  if (ggufs.empty()) {
    return absl::NotFoundError(
        absl::StrFormat("%s has no tokenizer.json and no .gguf file", file.string()));
  }
  return absl::InvalidArgumentError(absl::StrFormat(
      "%s has no tokenizer.json and %d .gguf files; name one", file.string(), ggufs.size()));
}

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromFile(const std::string& path) {
  absl::StatusOr<std::filesystem::path> resolved = ResolveTokenizerFile(path);
  if (!resolved.ok()) return resolved.status();
  const std::filesystem::path& file = *resolved;
  if (IsGguf(file)) return tokenizer_impl::TokenizerFromGguf(file.string());
  std::error_code error;
  absl::StatusOr<std::string> json = ReadFile(file);
  if (!json.ok()) return json.status();
  SpecialTokenNames names;
  const std::filesystem::path config = file.parent_path() / "tokenizer_config.json";
  if (std::filesystem::exists(config, error)) {
    absl::StatusOr<SpecialTokenNames> read = ReadSpecialTokenNames(config);
    if (!read.ok()) return read.status();
    names = *std::move(read);
  }
  return Build(*json, file.string(), names);
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromJson(std::string_view json,
                                                               std::string_view source) {
  return Build(json, source, SpecialTokenNames{});
}

}  // namespace kvfold
