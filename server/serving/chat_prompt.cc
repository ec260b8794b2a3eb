#include "server/serving/chat_prompt.h"

#include <filesystem>
#include <fstream>
#include <sstream>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "worker/gguf_metadata.h"

namespace kvfold::serving {
namespace {

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path));
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// tokenizer_config.json's chat_template: a string, or [{"name", "template"}] with "default".
absl::StatusOr<std::string> TemplateFromTokenizerConfig(const std::string& path) {
  absl::StatusOr<std::string> text = ReadFile(path);
  if (!text.ok()) return text.status();
  nlohmann::json config = nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (config.is_discarded()) return absl::InvalidArgumentError(absl::StrCat(path, ": bad JSON"));
  if (!config.is_object() || !config.contains("chat_template")) {
    return absl::NotFoundError(absl::StrCat(path, " has no chat_template"));
  }
  const nlohmann::json& t = config["chat_template"];
  if (t.is_string()) return t.get<std::string>();
  if (t.is_array()) {
    for (const nlohmann::json& named : t) {
      if (named.is_object() && named.value("name", "") == "default" && named.contains("template") &&
          named["template"].is_string()) {
        return named["template"].get<std::string>();
      }
    }
  }
  return absl::InvalidArgumentError(
      absl::StrCat(path, ": chat_template is neither a string nor has a \"default\" entry"));
}

std::string TokenText(const Tokenizer& tokenizer, std::optional<int32_t> id) {
  if (!id.has_value()) return "";
  std::optional<std::string_view> text = tokenizer.IdToToken(*id);
  return text.has_value() ? std::string(*text) : "";
}

}  // namespace

absl::StatusOr<ChatPrompt> ChatPrompt::FromSource(const std::string& source, std::string bos_token,
                                                  std::string eos_token) {
  absl::StatusOr<chat::ChatTemplate> parsed = chat::ChatTemplate::Parse(source);
  if (!parsed.ok()) return parsed.status();
  return ChatPrompt(*std::move(parsed), std::move(bos_token), std::move(eos_token));
}

absl::StatusOr<ChatPrompt> ChatPrompt::ForModel(const std::string& model_path,
                                                const std::string& override_file,
                                                const Tokenizer& tokenizer) {
  std::string source, origin;
  if (!override_file.empty()) {
    absl::StatusOr<std::string> text = ReadFile(override_file);
    if (!text.ok()) return text.status();
    source = *std::move(text);
    origin = absl::StrCat("--chat-template ", override_file);
  } else if (absl::EndsWith(model_path, ".gguf")) {
    absl::StatusOr<std::unique_ptr<GgufFile>> gguf = GgufFile::Open(model_path);
    if (!gguf.ok()) return gguf.status();
    if ((*gguf)->Find("tokenizer.chat_template") == nullptr) {
      return absl::NotFoundError(absl::StrCat(model_path, " has no tokenizer.chat_template"));
    }
    absl::StatusOr<std::string> text = (*gguf)->GetString("tokenizer.chat_template");
    if (!text.ok()) return text.status();
    source = *std::move(text);
    origin = "GGUF metadata";
  } else {
    const std::string config = (std::filesystem::path(model_path) / "tokenizer_config.json");
    absl::StatusOr<std::string> text = TemplateFromTokenizerConfig(config);
    if (!text.ok()) return text.status();
    source = *std::move(text);
    origin = "tokenizer_config.json";
  }
  absl::StatusOr<ChatPrompt> prompt = FromSource(source, TokenText(tokenizer, tokenizer.bos_id()),
                                                 TokenText(tokenizer, tokenizer.eos_id()));
  if (!prompt.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("chat template from ", origin, ": ", prompt.status().message()));
  }
  prompt->origin_ = origin;
  return prompt;
}

absl::StatusOr<std::string> ChatPrompt::Render(const std::vector<api::ChatMessage>& messages,
                                               bool add_generation_prompt) const {
  nlohmann::ordered_json context;
  nlohmann::ordered_json list = nlohmann::ordered_json::array();
  for (const api::ChatMessage& m : messages) {
    nlohmann::ordered_json message = {{"role", m.role}, {"content", m.content}};
    if (m.name.has_value()) message["name"] = *m.name;
    list.push_back(std::move(message));
  }
  context["messages"] = std::move(list);
  context["add_generation_prompt"] = add_generation_prompt;
  context["bos_token"] = bos_;
  context["eos_token"] = eos_;
  absl::StatusOr<std::string> text = template_.Render(context);
  if (!text.ok()) return absl::InvalidArgumentError(text.status().message());
  return text;
}

}  // namespace kvfold::serving
