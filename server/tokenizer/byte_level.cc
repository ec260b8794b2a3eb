#include "server/tokenizer/byte_level.h"

#include "absl/container/flat_hash_map.h"
#include "server/tokenizer/utf8.h"

namespace kvfold::tokenizer_impl {
namespace {

std::string EncodeUtf8(char32_t c) {
  std::string out;
  if (c < 0x80) {
    out += static_cast<char>(c);
  } else if (c < 0x800) {
    out += static_cast<char>(0xC0 | (c >> 6));
    out += static_cast<char>(0x80 | (c & 0x3F));
  } else {
    out += static_cast<char>(0xE0 | (c >> 12));
    out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (c & 0x3F));
  }
  return out;
}

// bytes_to_unicode(): printable Latin-1 bytes stand for themselves, the rest for U+0100 onwards.
std::array<char32_t, 256> CodePoints() {
  std::array<char32_t, 256> table{};
  char32_t next = 256;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
    table[b] = printable ? static_cast<char32_t>(b) : next++;
  }
  return table;
}

const absl::flat_hash_map<char32_t, char>& CharToByte() {
  static const auto* const map = [] {
    auto* m = new absl::flat_hash_map<char32_t, char>();
    const std::array<char32_t, 256> points = CodePoints();
    for (int b = 0; b < 256; ++b) (*m)[points[b]] = static_cast<char>(b);
    return m;
  }();
  return *map;
}

}  // namespace

const std::array<std::string, 256>& ByteLevelAlphabet() {
  static const auto* const alphabet = [] {
    auto* a = new std::array<std::string, 256>();
    const std::array<char32_t, 256> points = CodePoints();
    for (int b = 0; b < 256; ++b) (*a)[b] = EncodeUtf8(points[b]);
    return a;
  }();
  return *alphabet;
}

std::optional<std::string> ByteLevelToBytes(std::string_view token) {
  const absl::flat_hash_map<char32_t, char>& map = CharToByte();
  std::string bytes;
  bytes.reserve(token.size());
  for (size_t pos = 0; pos < token.size();) {
    const size_t len = Utf8CharLength(static_cast<unsigned char>(token[pos]));
    if (pos + len > token.size()) return std::nullopt;
    const auto it = map.find(DecodeFirstCodePoint(token.substr(pos, len)));
    if (it == map.end()) return std::nullopt;
    bytes += it->second;
    pos += len;
  }
  return bytes;
}

std::string BytesToByteLevel(std::string_view bytes) {
  const std::array<std::string, 256>& alphabet = ByteLevelAlphabet();
  std::string out;
  out.reserve(bytes.size() * 2);
  for (const char c : bytes) out += alphabet[static_cast<unsigned char>(c)];
  return out;
}

}  // namespace kvfold::tokenizer_impl
