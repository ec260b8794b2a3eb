#include "server/tokenizer/normalizer.h"

#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"

namespace kvfold::tokenizer_impl {
namespace {

// HF prepends only to non-empty text, so an empty piece stays empty.
class PrependNormalizer : public Normalizer {
 public:
  explicit PrependNormalizer(std::string prepend) : prepend_(std::move(prepend)) {}
  void Normalize(std::string* text) const override {
    if (!text->empty()) text->insert(0, prepend_);
  }

 private:
  std::string prepend_;
};

class ReplaceNormalizer : public Normalizer {
 public:
  ReplaceNormalizer(std::string pattern, std::string content)
      : pattern_(std::move(pattern)), content_(std::move(content)) {}
  void Normalize(std::string* text) const override {
    absl::StrReplaceAll({{pattern_, content_}}, text);
  }

 private:
  std::string pattern_;
  std::string content_;
};

class SequenceNormalizer : public Normalizer {
 public:
  explicit SequenceNormalizer(std::vector<std::unique_ptr<Normalizer>> steps)
      : steps_(std::move(steps)) {}
  void Normalize(std::string* text) const override {
    for (const auto& step : steps_) step->Normalize(text);
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> steps_;
};

absl::StatusOr<std::unique_ptr<Normalizer>> MakeSequence(const Json& config) {
  return MakeSequenceOf<SequenceNormalizer>(config, "normalizer", "normalizers", &MakeNormalizer);
}

}  // namespace

absl::StatusOr<std::string> ReplacePatternString(const Json& config, std::string_view where) {
  const Json* pattern = FindMember(config, "pattern");
  if (pattern == nullptr || !pattern->is_object()) {
    return absl::InvalidArgumentError(absl::StrFormat("%s: \"pattern\" must be an object", where));
  }
  if (FindMember(*pattern, "Regex") != nullptr) {
    return absl::UnimplementedError(
        absl::StrFormat("%s with a Regex pattern is not supported yet", where));
  }
  absl::StatusOr<std::string> text = GetString(*pattern, "String", where);
  if (text.ok() && text->empty()) {
    return absl::InvalidArgumentError(absl::StrFormat("%s: empty pattern", where));
  }
  return text;
}

absl::StatusOr<std::unique_ptr<Normalizer>> MakeNormalizer(const Json& config) {
  absl::StatusOr<std::string> type = ComponentType(config, "normalizer");
  if (!type.ok()) return type.status();
  if (*type == "Sequence") return MakeSequence(config);
  if (*type == "Prepend") {
    absl::StatusOr<std::string> prepend = GetString(config, "prepend", "normalizer Prepend");
    if (!prepend.ok()) return prepend.status();
    return std::make_unique<PrependNormalizer>(*std::move(prepend));
  }
  if (*type == "Replace") {
    absl::StatusOr<std::string> pattern = ReplacePatternString(config, "normalizer Replace");
    if (!pattern.ok()) return pattern.status();
    absl::StatusOr<std::string> content = GetString(config, "content", "normalizer Replace");
    if (!content.ok()) return content.status();
    return std::make_unique<ReplaceNormalizer>(*std::move(pattern), *std::move(content));
  }
  return absl::UnimplementedError(
      absl::StrFormat("tokenizer.json normalizer \"%s\" is not supported yet", *type));
}

}  // namespace kvfold::tokenizer_impl
