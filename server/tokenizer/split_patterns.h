// The pre-tokenizer regexes of the byte-level families, matched by hand: GPT-2's (ByteLevel's
// use_regex), Llama 3's and Qwen 2's (Split). Each matcher gives, at a position, the end of the
// match the reference's regex engine finds there, following its alternation order and
// backtracking exactly; every character starts some match, so the text splits into consecutive
// matches. Other patterns go to PCRE2 (pcre2_regex.h).
#pragma once

#include <cstddef>
#include <optional>
#include <string_view>

namespace kvfold::tokenizer_impl {

enum class KnownPattern { kGpt2, kLlama3, kQwen2 };

// The known pattern whose regex source is exactly `regex`, if any.
std::optional<KnownPattern> RecognizePattern(std::string_view regex);

// GPT-2's pattern, as ByteLevel(use_regex=true) applies it.
inline constexpr std::string_view kGpt2Regex =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
inline constexpr std::string_view kLlama3Regex =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
inline constexpr std::string_view kQwen2Regex =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| "
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

// End of the match that starts at `pos` (< text.size()); always > pos. `text` is valid UTF-8.
size_t MatchEnd(KnownPattern pattern, std::string_view text, size_t pos);

}  // namespace kvfold::tokenizer_impl
