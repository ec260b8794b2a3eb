// UTF-8 helpers for the tokenizer: validation (Rust `str` rules, which HF relies on), character
// boundaries and Unicode White_Space (Rust's `char::is_whitespace`).
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace kvfold {

// True when `text` is well-formed UTF-8: no overlong forms, no surrogates, nothing past U+10FFFF.
bool IsValidUtf8(std::string_view text);

// Byte offset of the first ill-formed sequence, or nullopt when `text` is valid.
std::optional<size_t> FirstInvalidUtf8Offset(std::string_view text);

namespace tokenizer_impl {

// Byte length of the character whose lead byte is `lead`, for text already known to be valid.
inline size_t Utf8CharLength(unsigned char lead) {
  if (lead < 0x80) return 1;
  if (lead < 0xE0) return 2;
  if (lead < 0xF0) return 3;
  return 4;
}

// The code point at the start of `text` (valid, non-empty).
char32_t DecodeFirstCodePoint(std::string_view text);

// The code point that ends `text` (valid, non-empty).
char32_t DecodeLastCodePoint(std::string_view text);

// Unicode White_Space, as Rust's `char::is_whitespace` defines it.
bool IsUnicodeWhitespace(char32_t c);

// Byte length of the whitespace run that starts `text`.
size_t LeadingWhitespaceLength(std::string_view text);

// Byte offset where the whitespace run that ends `text` begins (text.size() when there is none).
size_t TrailingWhitespaceStart(std::string_view text);

// True when `text` is exactly one UTF-8 character.
bool IsSingleCharacter(std::string_view text);

// Appends `bytes` as text, each maximal ill-formed subsequence replaced by one U+FFFD: Rust's
// String::from_utf8_lossy (and Unicode's recommended practice), which HF's ByteLevel decoder uses.
void AppendUtf8Lossy(std::string_view bytes, std::string* out);

}  // namespace tokenizer_impl
}  // namespace kvfold
