#include "server/tokenizer/split_patterns.h"

#include "server/tokenizer/unicode_tables.h"

namespace kvfold::tokenizer_impl {
namespace {

inline bool IsCrLf(char32_t c) { return c == '\r' || c == '\n'; }

// End of the run of characters from `pos` whose class is in `mask` (pos itself is not checked
// twice: callers pass the first position to test).
inline size_t RunEnd(std::string_view text, size_t pos, uint8_t mask) {
  while (pos < text.size()) {
    const Char c = CharAt(text, pos);
    if ((c.char_class & mask) == 0) break;
    pos += c.length;
  }
  return pos;
}

inline size_t OtherRunEnd(std::string_view text, size_t pos) {
  while (pos < text.size()) {
    const Char c = CharAt(text, pos);
    if (c.char_class != kOther) break;
    pos += c.length;
  }
  return pos;
}

// 's 't 're 've 'm 'll 'd at pos (text[pos] == '\''); case-insensitive as Oniguruma folds case,
// where U+017F (long s) matches s. Returns the end or 0.
size_t ContractionEnd(std::string_view text, size_t pos, bool ignore_case) {
  const size_t n = text.size();
  if (pos + 1 >= n) return 0;
  auto lower = [ignore_case](char c) -> char {
    return ignore_case && c >= 'A' && c <= 'Z' ? static_cast<char>(c + 32) : c;
  };
  const char a = lower(text[pos + 1]);
  if (a == 's' || a == 't' || a == 'm' || a == 'd') return pos + 2;
  if (ignore_case && text.substr(pos + 1, 2) == "\xC5\xBF") return pos + 3;  // U+017F
  if (pos + 2 >= n) return 0;
  const char b = lower(text[pos + 2]);
  if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return pos + 3;
  return 0;
}

// \s+(?!\S)|\s+ at pos, where text[pos] is whitespace and the run ends at `run_end`: the run less
// its last character when a non-space follows and the run has two or more characters.
size_t TrailingSpaceRule(std::string_view text, size_t pos, size_t run_end) {
  if (run_end == text.size()) return run_end;
  size_t last = run_end - 1;
  while ((static_cast<unsigned char>(text[last]) & 0xC0) == 0x80) --last;
  return last > pos ? last : run_end;
}

size_t Gpt2MatchEnd(std::string_view text, size_t pos) {
  const Char c0 = CharAt(text, pos);
  if (c0.code_point == '\'') {
    if (size_t end = ContractionEnd(text, pos, /*ignore_case=*/false)) return end;
  }
  size_t body = pos;  // where " ?X+" starts X
  uint8_t body_class = c0.char_class;
  if (c0.code_point == ' ' && pos + 1 < text.size()) {
    const Char c1 = CharAt(text, pos + 1);
    if (c1.char_class != kSpace) {
      body = pos + 1;
      body_class = c1.char_class;
    }
  }
  if (body_class == kLetter || body_class == kNumber) return RunEnd(text, body, body_class);
  if (body_class == kOther) return OtherRunEnd(text, body);
  return TrailingSpaceRule(text, pos, RunEnd(text, pos, kSpace));
}

// Llama 3 (`max_digits` 3) and Qwen 2 (`max_digits` 1).
size_t Llama3MatchEnd(std::string_view text, size_t pos, int max_digits) {
  const size_t n = text.size();
  const Char c0 = CharAt(text, pos);
  if (c0.code_point == '\'') {
    if (size_t end = ContractionEnd(text, pos, /*ignore_case=*/true)) return end;
  }
  // [^\r\n\p{L}\p{N}]?\p{L}+
  if (c0.char_class == kLetter) return RunEnd(text, pos + c0.length, kLetter);
  const bool may_prefix =
      c0.char_class == kOther || (c0.char_class == kSpace && !IsCrLf(c0.code_point));
  if (may_prefix && pos + c0.length < n) {
    const Char c1 = CharAt(text, pos + c0.length);
    if (c1.char_class == kLetter) return RunEnd(text, pos + c0.length + c1.length, kLetter);
  }
  // \p{N}{1,max_digits}
  if (c0.char_class == kNumber) {
    size_t end = pos + c0.length;
    for (int i = 1; i < max_digits && end < n; ++i) {
      const Char c = CharAt(text, end);
      if (c.char_class != kNumber) break;
      end += c.length;
    }
    return end;
  }
  // " ?[^\s\p{L}\p{N}]+[\r\n]*"
  size_t body = c0.char_class == kOther ? pos : n;
  if (c0.code_point == ' ' && pos + 1 < n && CharAt(text, pos + 1).char_class == kOther) {
    body = pos + 1;
  }
  if (body < n) {
    size_t end = OtherRunEnd(text, body);
    while (end < n && IsCrLf(static_cast<unsigned char>(text[end]))) ++end;
    return end;
  }
  // c0 is whitespace: \s*[\r\n]+ ends after the run's last CR/LF; else the space rules.
  const size_t run_end = RunEnd(text, pos, kSpace);
  for (size_t i = run_end; i > pos; --i) {
    if (IsCrLf(static_cast<unsigned char>(text[i - 1]))) return i;
  }
  return TrailingSpaceRule(text, pos, run_end);
}

}  // namespace

std::optional<KnownPattern> RecognizePattern(std::string_view regex) {
  if (regex == kGpt2Regex) return KnownPattern::kGpt2;
  if (regex == kLlama3Regex) return KnownPattern::kLlama3;
  if (regex == kQwen2Regex) return KnownPattern::kQwen2;
  return std::nullopt;
}

size_t MatchEnd(KnownPattern pattern, std::string_view text, size_t pos) {
  switch (pattern) {
    case KnownPattern::kGpt2:
      return Gpt2MatchEnd(text, pos);
    case KnownPattern::kLlama3:
      return Llama3MatchEnd(text, pos, 3);
    case KnownPattern::kQwen2:
      return Llama3MatchEnd(text, pos, 1);
  }
  return text.size();
}

}  // namespace kvfold::tokenizer_impl
