// tokenizer.json "model" of type BPE, as Hugging Face `tokenizers` runs it: characters (or their
// <0xNN> byte pieces, or <unk>) merged pairwise by rank, lowest rank first, leftmost first among
// equal ranks. A binary heap over a linked list of symbols keeps a word of n characters at
// O(n log n); stale heap entries are skipped when popped. After a ByteLevel pre-tokenizer the
// symbols are the words' bytes. Results for short words are cached per thread.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "server/tokenizer/json_util.h"
#include "server/tokenizer/model.h"
#include "server/tokenizer/string_map.h"

namespace kvfold::tokenizer_impl {

class BpeModel : public Model {
 public:
  // `config` is the "model" object of tokenizer.json.
  static absl::StatusOr<std::unique_ptr<BpeModel>> FromJson(const Json& config);
  // A vocabulary from a GGUF file: tokens by id (a repeated token keeps its last id), merges as
  // "left right" lines.
  static absl::StatusOr<std::unique_ptr<BpeModel>> FromTokensAndMerges(
      const std::vector<std::string>& tokens, const std::vector<std::string>& merges);

  void Tokenize(std::string_view word, std::vector<int32_t>* ids) const override;
  std::optional<int32_t> TokenToId(std::string_view token) const override;
  std::optional<std::string_view> IdToToken(int32_t id) const override;
  int32_t NumIds() const override { return static_cast<int32_t>(id_to_token_.size()); }
  size_t VocabSize() const override { return vocab_.size(); }
  absl::Status SetByteLevelInput() override;

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

  BpeModel();
  absl::Status ReadVocab(const Json& config);
  void IndexVocab();  // id_to_token_ and byte_ids_ from vocab_
  absl::Status ReadMerges(const Json& config);
  absl::Status AddMerge(std::string_view left, std::string_view right, int32_t rank);
  absl::Status ReadOptions(const Json& config);

  // The word as symbols before any merge: one per character, byte pieces or a (fused) <unk>.
  std::vector<Symbol> InitialSymbols(std::string_view word) const;
  // One symbol per byte, after a ByteLevel pre-tokenizer.
  std::vector<Symbol> ByteLevelSymbols(std::string_view word) const;
  void TokenizeUncached(std::string_view word, std::vector<int32_t>* ids) const;
  void MergeAll(std::vector<Symbol>* symbols) const;
  const MergeTarget* FindMerge(int32_t left, int32_t right) const;

  StringMap<int32_t> vocab_;
  std::vector<std::optional<std::string>> id_to_token_;
  absl::flat_hash_map<uint64_t, MergeTarget> merges_;  // key: left id << 32 | right id
  std::array<std::optional<int32_t>, 256> byte_ids_;   // ids of <0x00>..<0xFF>
  std::optional<int32_t> unk_id_;
  bool byte_fallback_ = false;
  bool fuse_unk_ = false;
  bool ignore_merges_ = false;
  std::string continuing_subword_prefix_;
  std::string end_of_word_suffix_;
  bool byte_level_ = false;
  std::array<std::optional<int32_t>, 256> byte_level_ids_;  // ids of the byte-level characters
  StringMap<int32_t> raw_vocab_;  // byte-level tokens by their bytes, for ignore_merges
  uint64_t cache_id_;             // tells this model's entries in the per-thread word cache
};

}  // namespace kvfold::tokenizer_impl
