#include "server/tokenizer/post_processor.h"

#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "server/tokenizer/bpe_model.h"

namespace kvfold::tokenizer_impl {
namespace {

// The "single" template: special-token ids before and after sequence $A.
class TemplateProcessor : public PostProcessor {
 public:
  TemplateProcessor(std::vector<int32_t> prefix, std::vector<int32_t> suffix)
      : prefix_(std::move(prefix)), suffix_(std::move(suffix)) {}
  void AddSpecialTokens(std::vector<int32_t>* ids) const override {
    ids->insert(ids->begin(), prefix_.begin(), prefix_.end());
    ids->insert(ids->end(), suffix_.begin(), suffix_.end());
  }
  std::optional<int32_t> FirstPrefixId() const override {
    if (prefix_.empty()) return std::nullopt;
    return prefix_.front();
  }

 private:
  std::vector<int32_t> prefix_;
  std::vector<int32_t> suffix_;
};

class SequenceProcessor : public PostProcessor {
 public:
  explicit SequenceProcessor(std::vector<std::unique_ptr<PostProcessor>> steps)
      : steps_(std::move(steps)) {}
  void AddSpecialTokens(std::vector<int32_t>* ids) const override {
    for (const auto& step : steps_) step->AddSpecialTokens(ids);
  }
  std::optional<int32_t> FirstPrefixId() const override {
    for (const auto& step : steps_) {
      if (std::optional<int32_t> id = step->FirstPrefixId()) return id;
    }
    return std::nullopt;
  }

 private:
  std::vector<std::unique_ptr<PostProcessor>> steps_;
};

// The ids of special token `name` from the processor's "special_tokens" table.
absl::StatusOr<std::vector<int32_t>> SpecialTokenIds(const Json& config, const std::string& name) {
  constexpr std::string_view kWhere = "post_processor TemplateProcessing";
  const Json* table = FindMember(config, "special_tokens");
  const Json* entry = table == nullptr ? nullptr : FindMember(*table, name);
  const Json* ids = entry == nullptr ? nullptr : FindMember(*entry, "ids");
  if (ids == nullptr || !ids->is_array()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: special token \"%s\" has no \"ids\" list", kWhere, name));
  }
  std::vector<int32_t> result;
  for (const Json& id : *ids) {
    absl::StatusOr<int64_t> value = AsInt(id, 0, kMaxTokenId, kWhere);
    if (!value.ok()) return value.status();
    result.push_back(static_cast<int32_t>(*value));
  }
  return result;
}

absl::StatusOr<std::unique_ptr<PostProcessor>> MakeTemplate(const Json& config) {
  constexpr std::string_view kWhere = "post_processor TemplateProcessing";
  const Json* single = FindMember(config, "single");
  if (single == nullptr || !single->is_array()) {
    return absl::InvalidArgumentError(absl::StrFormat("%s: \"single\" must be an array", kWhere));
  }
  std::vector<int32_t> prefix, suffix;
  bool seen_sequence = false;
  for (const Json& item : *single) {
    if (const Json* special = FindMember(item, "SpecialToken")) {
      absl::StatusOr<std::string> name = GetString(*special, "id", kWhere);
      if (!name.ok()) return name.status();
      absl::StatusOr<std::vector<int32_t>> ids = SpecialTokenIds(config, *name);
      if (!ids.ok()) return ids.status();
      std::vector<int32_t>& side = seen_sequence ? suffix : prefix;
      side.insert(side.end(), ids->begin(), ids->end());
    } else if (const Json* sequence = FindMember(item, "Sequence")) {
      absl::StatusOr<std::string> name = GetString(*sequence, "id", kWhere);
      if (!name.ok()) return name.status();
      if (*name != "A" || seen_sequence) {
        return absl::InvalidArgumentError(
            absl::StrFormat("%s: \"single\" must hold sequence A exactly once", kWhere));
      }
      seen_sequence = true;
    } else {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s: template items must be SpecialToken or Sequence", kWhere));
    }
  }
  if (!seen_sequence) {
    return absl::InvalidArgumentError(absl::StrFormat("%s: \"single\" lacks sequence A", kWhere));
  }
  return std::make_unique<TemplateProcessor>(std::move(prefix), std::move(suffix));
}

// ByteLevel's post-processing only trims offsets, which ids do not carry: nothing to do.
class ByteLevelProcessor : public PostProcessor {
 public:
  void AddSpecialTokens(std::vector<int32_t>* ids) const override {}
  std::optional<int32_t> FirstPrefixId() const override { return std::nullopt; }
};

absl::StatusOr<std::unique_ptr<PostProcessor>> MakeSequence(const Json& config) {
  return MakeSequenceOf<SequenceProcessor>(config, "post_processor", "processors",
                                           &MakePostProcessor);
}

}  // namespace

std::unique_ptr<PostProcessor> MakeTemplateProcessor(std::vector<int32_t> prefix,
                                                     std::vector<int32_t> suffix) {
  return std::make_unique<TemplateProcessor>(std::move(prefix), std::move(suffix));
}

absl::StatusOr<std::unique_ptr<PostProcessor>> MakePostProcessor(const Json& config) {
  absl::StatusOr<std::string> type = ComponentType(config, "post_processor");
  if (!type.ok()) return type.status();
  if (*type == "TemplateProcessing") return MakeTemplate(config);
  if (*type == "Sequence") return MakeSequence(config);
  if (*type == "ByteLevel") return std::make_unique<ByteLevelProcessor>();
  return absl::UnimplementedError(
      absl::StrFormat("tokenizer.json post_processor \"%s\" is not supported yet", *type));
}

}  // namespace kvfold::tokenizer_impl
