// Classify(): a two-level table (256 code points per block, identical blocks shared) built once
// from the generated ranges in unicode_tables.cc.
#include <array>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "server/tokenizer/unicode_tables.h"
#include "server/tokenizer/utf8.h"

namespace kvfold::tokenizer_impl {
namespace {

constexpr char32_t kNumCodePoints = 0x110000;
constexpr int kBlockBits = 8;
constexpr char32_t kBlockSize = 1 << kBlockBits;

class ClassTable {
 public:
  ClassTable() {
    std::vector<uint8_t> flat(kNumCodePoints, kOther);
    for (const CodePointRange& r : LetterRanges()) {
      for (char32_t c = r.first; c <= r.last; ++c) flat[c] = kLetter;
    }
    for (const CodePointRange& r : NumberRanges()) {
      for (char32_t c = r.first; c <= r.last; ++c) flat[c] = kNumber;
    }
    for (char32_t c = 0; c < 0x3001; ++c) {
      if (IsUnicodeWhitespace(c)) flat[c] = kSpace;
    }
    absl::flat_hash_map<std::string, uint16_t> seen;
    for (char32_t block = 0; block < kNumCodePoints / kBlockSize; ++block) {
      std::string bytes(flat.begin() + block * kBlockSize, flat.begin() + (block + 1) * kBlockSize);
      auto [it, inserted] = seen.try_emplace(bytes, static_cast<uint16_t>(seen.size()));
      if (inserted) blocks_.insert(blocks_.end(), bytes.begin(), bytes.end());
      index_[block] = it->second;
    }
  }

  uint8_t Get(char32_t c) const {
    if (c >= kNumCodePoints) return kOther;
    return blocks_[(static_cast<size_t>(index_[c >> kBlockBits]) << kBlockBits) |
                   (c & (kBlockSize - 1))];
  }

 private:
  std::array<uint16_t, kNumCodePoints / kBlockSize> index_{};
  std::vector<uint8_t> blocks_;
};

}  // namespace

uint8_t Classify(char32_t c) {
  static const ClassTable* const table = new ClassTable();
  return table->Get(c);
}

}  // namespace kvfold::tokenizer_impl
