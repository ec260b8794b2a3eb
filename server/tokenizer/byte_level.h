// GPT-2's byte-level alphabet: each of the 256 byte values stands for one printable character
// (HF's bytes_to_char), so byte-level vocabularies spell arbitrary bytes as text.
#pragma once

#include <array>
#include <optional>
#include <string>
#include <string_view>

namespace kvfold::tokenizer_impl {

// UTF-8 of the character that stands for each byte.
const std::array<std::string, 256>& ByteLevelAlphabet();

// The bytes a byte-level token spells; nullopt when a character is outside the alphabet.
std::optional<std::string> ByteLevelToBytes(std::string_view token);

// The byte-level spelling of `bytes`.
std::string BytesToByteLevel(std::string_view bytes);

}  // namespace kvfold::tokenizer_impl
