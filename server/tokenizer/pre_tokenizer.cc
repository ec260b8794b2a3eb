#include "server/tokenizer/pre_tokenizer.h"

#include <utility>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"

namespace kvfold::tokenizer_impl {
namespace {

// Spaces become `replacement`, a replacement is prepended per the scheme, and with `split` every
// replacement starts a new piece (HF's MergedWithNext).
class MetaspacePreTokenizer : public PreTokenizer {
 public:
  MetaspacePreTokenizer(std::string replacement, PrependScheme scheme, bool split)
      : replacement_(std::move(replacement)), scheme_(scheme), split_(split) {}

  void PreTokenize(std::vector<Piece>* pieces) const override {
    std::vector<Piece> out;
    for (Piece& piece : *pieces) {
      absl::StrReplaceAll({{" ", replacement_}}, &piece.text);
      const bool prepend = !absl::StartsWith(piece.text, replacement_) &&
                           (scheme_ == PrependScheme::kAlways ||
                            (scheme_ == PrependScheme::kFirst && piece.at_origin));
      if (prepend) piece.text.insert(0, replacement_);
      if (split_) {
        SplitBeforeReplacement(piece, &out);
      } else if (!piece.text.empty()) {
        out.push_back(std::move(piece));
      }
    }
    *pieces = std::move(out);
  }

 private:
  void SplitBeforeReplacement(const Piece& piece, std::vector<Piece>* out) const {
    const std::string& text = piece.text;
    size_t start = 0;
    while (start < text.size()) {
      size_t next = text.find(replacement_, start + 1);
      // Searching from start + 1 may begin inside a character, but a match cannot: the
      // replacement starts with a lead byte, never a continuation byte.
      if (next == std::string::npos) next = text.size();
      out->push_back(Piece{text.substr(start, next - start), piece.at_origin && start == 0});
      start = next;
    }
  }

  std::string replacement_;
  PrependScheme scheme_;
  bool split_;
};

class SequencePreTokenizer : public PreTokenizer {
 public:
  explicit SequencePreTokenizer(std::vector<std::unique_ptr<PreTokenizer>> steps)
      : steps_(std::move(steps)) {}
  void PreTokenize(std::vector<Piece>* pieces) const override {
    for (const auto& step : steps_) step->PreTokenize(pieces);
  }
  bool MapsToByteLevel() const override {
    return !steps_.empty() && steps_.back()->MapsToByteLevel();
  }
  // The first step that ByteLevel's deferred mapping would wrongly skip, if any.
  bool HasStepAfterByteLevel() const {
    for (size_t i = 0; i + 1 < steps_.size(); ++i) {
      if (steps_[i]->MapsToByteLevel()) return true;
    }
    return false;
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> steps_;
};

absl::StatusOr<std::unique_ptr<PreTokenizer>> MakeMetaspace(const Json& config) {
  constexpr std::string_view kWhere = "pre_tokenizer Metaspace";
  absl::StatusOr<std::string> replacement = GetSingleCharacter(config, "replacement", kWhere);
  if (!replacement.ok()) return replacement.status();
  absl::StatusOr<PrependScheme> scheme = ReadPrependScheme(config, kWhere);
  if (!scheme.ok()) return scheme.status();
  absl::StatusOr<bool> split = GetBool(config, "split", true, kWhere);
  if (!split.ok()) return split.status();
  return std::make_unique<MetaspacePreTokenizer>(*std::move(replacement), *scheme, *split);
}

absl::StatusOr<std::unique_ptr<PreTokenizer>> MakeSequence(const Json& config) {
  absl::StatusOr<std::unique_ptr<PreTokenizer>> sequence = MakeSequenceOf<SequencePreTokenizer>(
      config, "pre_tokenizer", "pretokenizers", &MakePreTokenizer);
  if (sequence.ok() &&
      static_cast<const SequencePreTokenizer&>(**sequence).HasStepAfterByteLevel()) {
    return absl::UnimplementedError(
        "pre_tokenizer Sequence: steps after ByteLevel are not supported yet");
  }
  return sequence;
}

}  // namespace

absl::StatusOr<PrependScheme> ReadPrependScheme(const Json& config, std::string_view where) {
  absl::StatusOr<std::optional<std::string>> scheme =
      GetOptionalString(config, "prepend_scheme", where);
  if (!scheme.ok()) return scheme.status();
  absl::StatusOr<bool> add_prefix_space = GetBool(config, "add_prefix_space", true, where);
  if (!add_prefix_space.ok()) return add_prefix_space.status();
  // As HF: add_prefix_space=false forces "never"; otherwise prepend_scheme, default "always".
  if (!*add_prefix_space) {
    if (scheme->has_value() && **scheme != "never") {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: add_prefix_space=false contradicts prepend_scheme \"%s\"", where, **scheme));
    }
    return PrependScheme::kNever;
  }
  if (!scheme->has_value() || **scheme == "always") return PrependScheme::kAlways;
  if (**scheme == "first") return PrependScheme::kFirst;
  if (**scheme == "never") return PrependScheme::kNever;
  return absl::InvalidArgumentError(
      absl::StrFormat("%s: unknown prepend_scheme \"%s\"", where, **scheme));
}

std::unique_ptr<PreTokenizer> MakePreTokenizerSequence(
    std::vector<std::unique_ptr<PreTokenizer>> steps) {
  return std::make_unique<SequencePreTokenizer>(std::move(steps));
}

absl::StatusOr<std::unique_ptr<PreTokenizer>> MakePreTokenizer(const Json& config) {
  absl::StatusOr<std::string> type = ComponentType(config, "pre_tokenizer");
  if (!type.ok()) return type.status();
  if (*type == "Metaspace") return MakeMetaspace(config);
  if (*type == "Sequence") return MakeSequence(config);
  if (*type == "Split") return MakeSplit(config);
  if (*type == "Digits") return MakeDigits(config);
  if (*type == "ByteLevel") return MakeByteLevel(config);
  return absl::UnimplementedError(
      absl::StrFormat("tokenizer.json pre_tokenizer \"%s\" is not supported yet", *type));
}

}  // namespace kvfold::tokenizer_impl
