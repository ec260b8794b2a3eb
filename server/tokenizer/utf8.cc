#include "server/tokenizer/utf8.h"

namespace kvfold {

namespace {

// The length of the well-formed character at s[i] (1 for ASCII), or, when it is ill-formed, 0 and
// in *subpart the length of its maximal ill-formed subpart (at least 1).
size_t ValidCharLength(const unsigned char* s, size_t n, size_t i, size_t* subpart) {
  const unsigned char c = s[i];
  if (c < 0x80) return 1;
  size_t len = 0;
  unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (c >= 0xC2 && c <= 0xDF) {
    len = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    len = 3;
    if (c == 0xE0) lo = 0xA0;  // overlong
    if (c == 0xED) hi = 0x9F;  // surrogates
  } else if (c >= 0xF0 && c <= 0xF4) {
    len = 4;
    if (c == 0xF0) lo = 0x90;  // overlong
    if (c == 0xF4) hi = 0x8F;  // past U+10FFFF
  } else {
    *subpart = 1;
    return 0;
  }
  size_t k = 1;
  if (i + k < n && s[i + k] >= lo && s[i + k] <= hi) {
    for (++k; k < len && i + k < n && s[i + k] >= 0x80 && s[i + k] <= 0xBF;) ++k;
  }
  if (k == len) return len;
  *subpart = k;
  return 0;
}

}  // namespace

std::optional<size_t> FirstInvalidUtf8Offset(std::string_view text) {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  size_t subpart = 0;
  for (size_t i = 0; i < n;) {
    const size_t len = ValidCharLength(s, n, i, &subpart);
    if (len == 0) return i;
    i += len;
  }
  return std::nullopt;
}

void tokenizer_impl::AppendUtf8Lossy(std::string_view bytes, std::string* out) {
  const auto* s = reinterpret_cast<const unsigned char*>(bytes.data());
  const size_t n = bytes.size();
  size_t subpart = 0;
  for (size_t i = 0; i < n;) {
    const size_t len = ValidCharLength(s, n, i, &subpart);
    if (len > 0) {
      out->append(bytes.substr(i, len));
      i += len;
    } else {
      out->append("\xEF\xBF\xBD");  // U+FFFD
      i += subpart;
    }
  }
}

bool IsValidUtf8(std::string_view text) { return !FirstInvalidUtf8Offset(text).has_value(); }

namespace tokenizer_impl {

char32_t DecodeFirstCodePoint(std::string_view text) {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  const size_t len = Utf8CharLength(s[0]);
  if (len == 1) return s[0];
  char32_t cp = s[0] & (0x7F >> len);
  for (size_t k = 1; k < len; ++k) cp = (cp << 6) | (s[k] & 0x3F);
  return cp;
}

char32_t DecodeLastCodePoint(std::string_view text) {
  size_t start = text.size() - 1;
  while (start > 0 && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) --start;
  return DecodeFirstCodePoint(text.substr(start));
}

bool IsUnicodeWhitespace(char32_t c) {
  if (c <= 0x7F) return c == ' ' || (c >= 0x09 && c <= 0x0D);
  switch (c) {
    case 0x85:
    case 0xA0:
    case 0x1680:
    case 0x2028:
    case 0x2029:
    case 0x202F:
    case 0x205F:
    case 0x3000:
      return true;
    default:
      return c >= 0x2000 && c <= 0x200A;
  }
}

size_t LeadingWhitespaceLength(std::string_view text) {
  size_t i = 0;
  while (i < text.size()) {
    const std::string_view rest = text.substr(i);
    if (!IsUnicodeWhitespace(DecodeFirstCodePoint(rest))) break;
    i += Utf8CharLength(static_cast<unsigned char>(rest[0]));
  }
  return i;
}

size_t TrailingWhitespaceStart(std::string_view text) {
  size_t end = text.size();
  while (end > 0) {
    const std::string_view head = text.substr(0, end);
    if (!IsUnicodeWhitespace(DecodeLastCodePoint(head))) break;
    --end;
    while (end > 0 && (static_cast<unsigned char>(text[end]) & 0xC0) == 0x80) --end;
  }
  return end;
}

bool IsSingleCharacter(std::string_view text) {
  return !text.empty() && IsValidUtf8(text) &&
         Utf8CharLength(static_cast<unsigned char>(text[0])) == text.size();
}

}  // namespace tokenizer_impl
}  // namespace kvfold
