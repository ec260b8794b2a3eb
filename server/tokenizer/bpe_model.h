// tokenizer.json "model" of type BPE, as Hugging Face `tokenizers` runs it: characters (or their
// <0xNN> byte pieces, or <unk>) merged pairwise by rank, lowest rank first, leftmost first among
// equal ranks. A binary heap over a linked list of symbols keeps a word of n characters at
// O(n log n); stale heap entries are skipped when popped.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "server/tokenizer/json_util.h"
#include "server/tokenizer/string_map.h"

namespace kvfold::tokenizer_impl {

// Largest token id accepted from a file, so a corrupt id cannot size a huge table.
inline constexpr int64_t kMaxTokenId = (int64_t{1} << 22) - 1;

class BpeModel {
 public:
  // `config` is the "model" object of tokenizer.json.
  static absl::StatusOr<std::unique_ptr<BpeModel>> FromJson(const Json& config);

  // Appends the ids of one pre-tokenized piece.
  void Tokenize(std::string_view word, std::vector<int32_t>* ids) const;

  std::optional<int32_t> TokenToId(std::string_view token) const;
  const StringMap<int32_t>& vocab() const { return vocab_; }

 private:
  struct Symbol {
    int32_t id;
    int32_t prev;  // index into the symbol list, -1 at the start
    int32_t next;  // index into the symbol list, -1 at the end
    size_t len;    // bytes of the word it covers; 0 once merged into its left neighbour
  };
  struct MergeTarget {
    int32_t rank;
    int32_t new_id;
  };

  BpeModel() = default;
  absl::Status ReadVocab(const Json& config);
  absl::Status ReadMerges(const Json& config);
  absl::Status AddMerge(std::string_view left, std::string_view right, int32_t rank);
  absl::Status ReadOptions(const Json& config);

  // The word as symbols before any merge: one per character, byte pieces or a (fused) <unk>.
  std::vector<Symbol> InitialSymbols(std::string_view word) const;
  void MergeAll(std::vector<Symbol>* symbols) const;
  const MergeTarget* FindMerge(int32_t left, int32_t right) const;

  StringMap<int32_t> vocab_;
  absl::flat_hash_map<uint64_t, MergeTarget> merges_;  // key: left id << 32 | right id
  std::array<std::optional<int32_t>, 256> byte_ids_;   // ids of <0x00>..<0xFF>
  std::optional<int32_t> unk_id_;
  bool byte_fallback_ = false;
  bool fuse_unk_ = false;
  bool ignore_merges_ = false;
  std::string continuing_subword_prefix_;
  std::string end_of_word_suffix_;
};

}  // namespace kvfold::tokenizer_impl
