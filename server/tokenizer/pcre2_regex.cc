#include "server/tokenizer/pcre2_regex.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "server/tokenizer/unicode_tables.h"
#include "server/tokenizer/utf8.h"

namespace kvfold::tokenizer_impl {
namespace {

pcre2_code* Code(void* code) { return static_cast<pcre2_code*>(code); }

// The ranges of a class as PCRE2 class items: "\x{41}-\x{5a}...".
std::string ClassItems(absl::Span<const CodePointRange> ranges) {
  std::string items;
  for (const CodePointRange& r : ranges) {
    items += absl::StrFormat("\\x{%x}", static_cast<uint32_t>(r.first));
    if (r.last != r.first) items += absl::StrFormat("-\\x{%x}", static_cast<uint32_t>(r.last));
  }
  return items;
}

std::string WhitespaceItems() {
  std::vector<CodePointRange> ranges;
  for (char32_t c = 0; c <= 0x3000; ++c) {
    if (IsUnicodeWhitespace(c)) ranges.push_back({c, c});
  }
  return ClassItems(ranges);
}

// Rewrites \p{L}, \p{N} (and \pL, \pN, \P{..} outside classes) and \s as explicit classes from
// unicode_tables.h, so the fallback classifies characters as the reference does rather than by
// PCRE2's older Unicode tables. Everything else is copied as written.
std::string WithReferenceClasses(std::string_view pattern) {
  static const std::string* const letters = new std::string(ClassItems(LetterRanges()));
  static const std::string* const numbers = new std::string(ClassItems(NumberRanges()));
  static const std::string* const spaces = new std::string(WhitespaceItems());
  std::string out;
  bool in_class = false;
  for (size_t i = 0; i < pattern.size(); ++i) {
    const char c = pattern[i];
    if (c != '\\' || i + 1 == pattern.size()) {
      if (c == '[' && !in_class) {
        in_class = true;
        out += c;
        // A ']' first in a class (after an optional '^') is literal.
        if (i + 1 < pattern.size() && pattern[i + 1] == '^') out += pattern[++i];
        if (i + 1 < pattern.size() && pattern[i + 1] == ']') out += pattern[++i];
        continue;
      }
      if (c == ']' && in_class) in_class = false;
      out += c;
      continue;
    }
    const char e = pattern[i + 1];
    const std::string* items = nullptr;
    size_t length = 2;  // of the escape in the pattern
    if (e == 's') items = spaces;
    if (e == 'p' || e == 'P') {
      const std::string_view rest = pattern.substr(i + 2);
      if (rest.starts_with("{L}") || rest.starts_with("L")) items = letters;
      if (rest.starts_with("{N}") || rest.starts_with("N")) items = numbers;
      length = rest.starts_with("{") ? 5 : 3;
      if (e == 'P' && in_class) items = nullptr;
    }
    if (items == nullptr) {
      out.append(pattern.substr(i, 2));
      ++i;
      continue;
    }
    if (in_class) {
      out += *items;
    } else {
      out += e == 'P' ? "[^" : "[";
      out += *items;
      out += ']';
    }
    i += length - 1;
  }
  return out;
}

struct MatchDataDeleter {
  void operator()(pcre2_match_data* data) const { pcre2_match_data_free(data); }
};

}  // namespace

absl::StatusOr<std::unique_ptr<Pcre2Regex>> Pcre2Regex::Compile(std::string_view pattern,
                                                                std::string_view where) {
  int error = 0;
  PCRE2_SIZE error_offset = 0;
  const std::string rewritten = WithReferenceClasses(pattern);
  pcre2_code* code =
      pcre2_compile(reinterpret_cast<PCRE2_SPTR>(rewritten.data()), rewritten.size(),
                    PCRE2_UTF | PCRE2_UCP, &error, &error_offset, /*ccontext=*/nullptr);
  if (code == nullptr) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(error, message, sizeof(message));
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: regex \"%s\" does not compile at offset %d: %s", where, pattern,
                        error_offset, reinterpret_cast<const char*>(message)));
  }
  std::unique_ptr<Pcre2Regex> regex(new Pcre2Regex());
  regex->code_ = code;
  regex->jit_ = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;
  return regex;
}

Pcre2Regex::~Pcre2Regex() { pcre2_code_free(Code(code_)); }

std::vector<std::pair<size_t, size_t>> Pcre2Regex::FindAll(std::string_view text) const {
  std::vector<std::pair<size_t, size_t>> matches;
  std::unique_ptr<pcre2_match_data, MatchDataDeleter> data(
      pcre2_match_data_create_from_pattern(Code(code_), nullptr));
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t start = 0;
  while (start <= text.size()) {
    const int rc = jit_ ? pcre2_jit_match(Code(code_), subject, text.size(), start,
                                          PCRE2_NO_UTF_CHECK, data.get(), nullptr)
                        : pcre2_match(Code(code_), subject, text.size(), start, PCRE2_NO_UTF_CHECK,
                                      data.get(), nullptr);
    if (rc < 0) break;  // PCRE2_ERROR_NOMATCH, or a resource limit: no further matches
    const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(data.get());
    const size_t begin = ovector[0], end = ovector[1];
    matches.emplace_back(begin, end);
    if (end > begin) {
      start = end;
    } else if (end < text.size()) {
      start = end + Utf8CharLength(static_cast<unsigned char>(text[end]));
    } else {
      break;
    }
  }
  return matches;
}

}  // namespace kvfold::tokenizer_impl
