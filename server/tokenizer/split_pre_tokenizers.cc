// The splitting pre-tokenizers: Split (regex or string pattern, every delimiter behaviour,
// invert), Digits and ByteLevel, following HF's SplitDelimiterBehavior rules exactly.
#include <memory>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "server/tokenizer/pcre2_regex.h"
#include "server/tokenizer/pre_tokenizer.h"
#include "server/tokenizer/split_patterns.h"
#include "server/tokenizer/unicode_tables.h"

namespace kvfold::tokenizer_impl {
namespace {

enum class Behavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

// A byte range of a piece and whether the pattern matched it.
struct Span {
  size_t begin;
  size_t end;
  bool is_match;
};

// What a pattern finds in a text: spans covering it, in order.
class Matcher {
 public:
  virtual ~Matcher() = default;
  virtual void Find(std::string_view text, std::vector<Span>* spans) const = 0;
};

class KnownPatternMatcher : public Matcher {
 public:
  explicit KnownPatternMatcher(KnownPattern pattern) : pattern_(pattern) {}
  void Find(std::string_view text, std::vector<Span>* spans) const override {
    for (size_t pos = 0; pos < text.size();) {
      const size_t end = MatchEnd(pattern_, text, pos);
      spans->push_back(Span{pos, end, true});
      pos = end;
    }
  }
  KnownPattern pattern() const { return pattern_; }

 private:
  KnownPattern pattern_;
};

// Adds the gaps between `matches` as non-matching spans.
void CoverWithGaps(const std::vector<std::pair<size_t, size_t>>& matches, size_t size,
                   std::vector<Span>* spans) {
  size_t prev = 0;
  for (const auto& [begin, end] : matches) {
    if (prev != begin) spans->push_back(Span{prev, begin, false});
    spans->push_back(Span{begin, end, true});
    prev = end;
  }
  if (prev != size) spans->push_back(Span{prev, size, false});
}

class RegexMatcher : public Matcher {
 public:
  explicit RegexMatcher(std::unique_ptr<Pcre2Regex> regex) : regex_(std::move(regex)) {}
  void Find(std::string_view text, std::vector<Span>* spans) const override {
    CoverWithGaps(regex_->FindAll(text), text.size(), spans);
  }

 private:
  std::unique_ptr<Pcre2Regex> regex_;
};

class StringMatcher : public Matcher {
 public:
  explicit StringMatcher(std::string needle) : needle_(std::move(needle)) {}
  void Find(std::string_view text, std::vector<Span>* spans) const override {
    std::vector<std::pair<size_t, size_t>> matches;
    if (!needle_.empty()) {
      for (size_t at = text.find(needle_); at != std::string_view::npos;
           at = text.find(needle_, at + needle_.size())) {
        matches.emplace_back(at, at + needle_.size());
      }
    }
    CoverWithGaps(matches, text.size(), spans);
  }

 private:
  std::string needle_;
};

// Each numeric character (\p{N}, as Rust's char::is_numeric) is a match; the runs between them
// are single non-matches, as HF's character-predicate pattern gives them.
class NumericMatcher : public Matcher {
 public:
  void Find(std::string_view text, std::vector<Span>* spans) const override {
    size_t last = 0;
    for (size_t pos = 0; pos < text.size();) {
      const Char c = CharAt(text, pos);
      if (c.char_class == kNumber) {
        if (last < pos) spans->push_back(Span{last, pos, false});
        spans->push_back(Span{pos, pos + c.length, true});
        last = pos + c.length;
      }
      pos += c.length;
    }
    if (last < text.size()) spans->push_back(Span{last, text.size(), false});
  }
};

// HF's SplitDelimiterBehavior applied to covering spans; empty results are dropped later.
std::vector<Span> ApplyBehavior(const std::vector<Span>& spans, Behavior behavior) {
  std::vector<Span> out;
  out.reserve(spans.size());
  bool previous_match = false;
  switch (behavior) {
    case Behavior::kIsolated:
      return spans;
    case Behavior::kRemoved:
      for (const Span& s : spans) {
        if (!s.is_match) out.push_back(s);
      }
      return out;
    case Behavior::kMergedWithPrevious:
      for (const Span& s : spans) {
        if (s.is_match && !previous_match && !out.empty()) {
          out.back().end = s.end;
        } else {
          out.push_back(s);
        }
        previous_match = s.is_match;
      }
      return out;
    case Behavior::kMergedWithNext:
      for (auto it = spans.rbegin(); it != spans.rend(); ++it) {
        if (it->is_match && !previous_match && !out.empty()) {
          out.back().begin = it->begin;
        } else {
          out.push_back(*it);
        }
        previous_match = it->is_match;
      }
      return std::vector<Span>(out.rbegin(), out.rend());
    case Behavior::kContiguous:
      for (const Span& s : spans) {
        if (s.is_match == previous_match && !out.empty()) {
          out.back().end = s.end;
        } else {
          out.push_back(s);
        }
        previous_match = s.is_match;
      }
      return out;
  }
  return out;
}

// Splits every piece by `matcher` under `behavior` (`invert`: the matches are the non-delimiters).
void SplitPieces(const Matcher& matcher, Behavior behavior, bool invert,
                 std::vector<Piece>* pieces) {
  std::vector<Piece> out;
  out.reserve(pieces->size() * 4);
  std::vector<Span> spans;
  for (Piece& piece : *pieces) {
    spans.clear();
    matcher.Find(piece.text, &spans);
    if (invert) {
      for (Span& s : spans) s.is_match = !s.is_match;
    }
    const std::vector<Span>* kept = &spans;
    std::vector<Span> applied;
    if (behavior != Behavior::kIsolated) {
      applied = ApplyBehavior(spans, behavior);
      kept = &applied;
    }
    for (const Span& s : *kept) {
      if (s.end > s.begin) {
        out.push_back(
            Piece{piece.text.substr(s.begin, s.end - s.begin), piece.at_origin && s.begin == 0});
      }
    }
  }
  *pieces = std::move(out);
}

class SplitPreTokenizer : public PreTokenizer {
 public:
  SplitPreTokenizer(std::unique_ptr<Matcher> matcher, Behavior behavior, bool invert)
      : matcher_(std::move(matcher)), behavior_(behavior), invert_(invert) {}
  void PreTokenize(std::vector<Piece>* pieces) const override {
    SplitPieces(*matcher_, behavior_, invert_, pieces);
  }

 private:
  std::unique_ptr<Matcher> matcher_;
  Behavior behavior_;
  bool invert_;
};

// Prepends a space where asked, splits with GPT-2's pattern where asked; the bytes-to-characters
// mapping itself is left to the model (MapsToByteLevel), which reads the raw bytes directly.
class ByteLevelPreTokenizer : public PreTokenizer {
 public:
  ByteLevelPreTokenizer(bool add_prefix_space, bool use_regex)
      : add_prefix_space_(add_prefix_space), use_regex_(use_regex), gpt2_(KnownPattern::kGpt2) {}
  void PreTokenize(std::vector<Piece>* pieces) const override {
    if (add_prefix_space_) {
      for (Piece& piece : *pieces) {
        if (!piece.text.starts_with(' ')) piece.text.insert(piece.text.begin(), ' ');
      }
    }
    if (use_regex_) SplitPieces(gpt2_, Behavior::kIsolated, /*invert=*/false, pieces);
  }
  bool MapsToByteLevel() const override { return true; }

 private:
  bool add_prefix_space_;
  bool use_regex_;
  KnownPatternMatcher gpt2_;
};

absl::StatusOr<Behavior> ReadBehavior(const Json& config, std::string_view where) {
  absl::StatusOr<std::string> name = GetString(config, "behavior", where);
  if (!name.ok()) return name.status();
  if (*name == "Removed") return Behavior::kRemoved;
  if (*name == "Isolated") return Behavior::kIsolated;
  if (*name == "MergedWithPrevious") return Behavior::kMergedWithPrevious;
  if (*name == "MergedWithNext") return Behavior::kMergedWithNext;
  if (*name == "Contiguous") return Behavior::kContiguous;
  return absl::InvalidArgumentError(absl::StrFormat("%s: unknown behavior \"%s\"", where, *name));
}

absl::StatusOr<std::unique_ptr<Matcher>> ReadPattern(const Json& config, std::string_view where) {
  const Json* pattern = FindMember(config, "pattern");
  if (pattern == nullptr || !pattern->is_object()) {
    return absl::InvalidArgumentError(absl::StrFormat("%s: \"pattern\" must be an object", where));
  }
  if (FindMember(*pattern, "String") != nullptr) {
    absl::StatusOr<std::string> text = GetString(*pattern, "String", where);
    if (!text.ok()) return text.status();
    return std::make_unique<StringMatcher>(*std::move(text));
  }
  absl::StatusOr<std::string> regex = GetString(*pattern, "Regex", where);
  if (!regex.ok()) return regex.status();
  if (std::optional<KnownPattern> known = RecognizePattern(*regex)) {
    return std::make_unique<KnownPatternMatcher>(*known);
  }
  absl::StatusOr<std::unique_ptr<Pcre2Regex>> compiled = Pcre2Regex::Compile(*regex, where);
  if (!compiled.ok()) return compiled.status();
  return std::make_unique<RegexMatcher>(*std::move(compiled));
}

}  // namespace

absl::StatusOr<std::unique_ptr<PreTokenizer>> MakeSplit(const Json& config) {
  constexpr std::string_view kWhere = "pre_tokenizer Split";
  absl::StatusOr<std::unique_ptr<Matcher>> matcher = ReadPattern(config, kWhere);
  if (!matcher.ok()) return matcher.status();
  absl::StatusOr<Behavior> behavior = ReadBehavior(config, kWhere);
  if (!behavior.ok()) return behavior.status();
  absl::StatusOr<bool> invert = GetBool(config, "invert", false, kWhere);
  if (!invert.ok()) return invert.status();
  return std::make_unique<SplitPreTokenizer>(*std::move(matcher), *behavior, *invert);
}

absl::StatusOr<std::unique_ptr<PreTokenizer>> MakeDigits(const Json& config) {
  absl::StatusOr<bool> individual =
      GetBool(config, "individual_digits", false, "pre_tokenizer Digits");
  if (!individual.ok()) return individual.status();
  return std::make_unique<SplitPreTokenizer>(
      std::make_unique<NumericMatcher>(), *individual ? Behavior::kIsolated : Behavior::kContiguous,
      /*invert=*/false);
}

absl::StatusOr<std::unique_ptr<PreTokenizer>> MakeByteLevel(const Json& config) {
  constexpr std::string_view kWhere = "pre_tokenizer ByteLevel";
  absl::StatusOr<bool> add_prefix_space = GetBool(config, "add_prefix_space", true, kWhere);
  if (!add_prefix_space.ok()) return add_prefix_space.status();
  absl::StatusOr<bool> use_regex = GetBool(config, "use_regex", true, kWhere);
  if (!use_regex.ok()) return use_regex.status();
  return std::make_unique<ByteLevelPreTokenizer>(*add_prefix_space, *use_regex);
}

std::unique_ptr<PreTokenizer> MakeByteLevelPreTokenizer(bool add_prefix_space, bool use_regex) {
  return std::make_unique<ByteLevelPreTokenizer>(add_prefix_space, use_regex);
}

std::unique_ptr<PreTokenizer> MakeKnownSplit(KnownPattern pattern) {
  return std::make_unique<SplitPreTokenizer>(std::make_unique<KnownPatternMatcher>(pattern),
                                             Behavior::kIsolated, /*invert=*/false);
}

std::unique_ptr<PreTokenizer> MakeIndividualDigits() {
  return std::make_unique<SplitPreTokenizer>(std::make_unique<NumericMatcher>(),
                                             Behavior::kIsolated, /*invert=*/false);
}

}  // namespace kvfold::tokenizer_impl
