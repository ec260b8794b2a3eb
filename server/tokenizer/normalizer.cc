#include "server/tokenizer/normalizer.h"

#include <unicode/bytestream.h>
#include <unicode/normalizer2.h>
#include <unicode/stringpiece.h>
#include <unicode/utypes.h>

#include <algorithm>
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

// Unicode NFC through ICU. Text with no code point from U+0300 up (every byte below 0xCC) is
// already NFC, and most text passes ICU's quick check, so only the rest is rewritten.
class NfcNormalizer : public Normalizer {
 public:
  explicit NfcNormalizer(const icu::Normalizer2* nfc) : nfc_(nfc) {}
  void Normalize(std::string* text) const override {
    if (std::all_of(text->begin(), text->end(),
                    [](char c) { return static_cast<unsigned char>(c) < 0xCC; })) {
      return;
    }
    UErrorCode error = U_ZERO_ERROR;
    const icu::StringPiece piece(text->data(), static_cast<int32_t>(text->size()));
    if (nfc_->isNormalizedUTF8(piece, error) && U_SUCCESS(error)) return;
    error = U_ZERO_ERROR;
    std::string normalized;
    icu::StringByteSink<std::string> sink(&normalized, static_cast<int32_t>(text->size()));
    nfc_->normalizeUTF8(0, piece, sink, nullptr, error);
    // The input is valid UTF-8, so ICU cannot fail short of memory; keep the text if it does.
    if (U_SUCCESS(error)) *text = std::move(normalized);
  }

 private:
  const icu::Normalizer2* nfc_;  // ICU's singleton
};

absl::StatusOr<std::unique_ptr<Normalizer>> MakeNfc() {
  UErrorCode error = U_ZERO_ERROR;
  const icu::Normalizer2* nfc = icu::Normalizer2::getNFCInstance(error);
  if (U_FAILURE(error) || nfc == nullptr) {
    return absl::InternalError(
        absl::StrFormat("normalizer NFC: ICU has no NFC data (%s)", u_errorName(error)));
  }
  return std::make_unique<NfcNormalizer>(nfc);
}

absl::StatusOr<std::unique_ptr<Normalizer>> MakeSequence(const Json& config) {
  return MakeSequenceOf<SequenceNormalizer>(config, "normalizer", "normalizers", &MakeNormalizer);
}

}  // namespace

std::unique_ptr<Normalizer> MakeSentencePieceNormalizer(bool add_space_prefix) {
  std::vector<std::unique_ptr<Normalizer>> steps;
  if (add_space_prefix) steps.push_back(std::make_unique<PrependNormalizer>("\u2581"));
  steps.push_back(std::make_unique<ReplaceNormalizer>(" ", "\u2581"));
  return std::make_unique<SequenceNormalizer>(std::move(steps));
}

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
  if (*type == "NFC") return MakeNfc();
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
