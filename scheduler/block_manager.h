// Owns the KV pool's block ids: ref counts, a free list in LRU order, and the prefix cache. The
// worker owns the bytes; a block id indexes every layer's K and V arrays alike.
//
// Prefix caching: a full block is keyed by hash(parent key, its tokens, cache salt); the salt
// carries the attention plan id so folded and unfolded caches never mix. Freed blocks that hold
// a key stay findable until the pool reuses them, least recently freed first. Blocks are plain
// data in a vector allocated up front (index = BlockId) with an intrusive free list.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/types/span.h"
#include "scheduler/step_plan.h"

namespace kvfold {

using BlockKey = uint64_t;

// "No block" in the intrusive free-list links; never a valid id.
inline constexpr BlockId kNoBlock = -1;

// The blocks one sequence holds, in order, and how many of them are registered in the cache.
struct BlockTable {
  std::vector<BlockId> blocks;
  // Keys of blocks[0, keys.size()): full of computed tokens and registered in the cache (or
  // duplicating a block registered first under the same key, which stays private).
  std::vector<BlockKey> keys;
};

class BlockManager {
 public:
  BlockManager(int32_t num_blocks, int32_t block_size, uint64_t cache_salt = 0);

  int32_t num_blocks() const;
  int32_t block_size() const { return block_size_; }
  // Blocks with no holder (including cached ones that can be reused).
  int32_t num_free_blocks() const;
  int32_t BlocksFor(int32_t num_tokens) const;

  // The longest run of leading full blocks of `tokens` found in the cache, as block ids. Looks
  // only; nothing is taken. Counts one query of tokens.size() tokens and the hit tokens.
  std::vector<BlockId> FindCachedPrefix(absl::Span<const int32_t> tokens);

  // Whether Allocate(table, num_tokens, cached_prefix) would succeed.
  bool CanAllocate(const BlockTable& table, int32_t num_tokens,
                   absl::Span<const BlockId> cached_prefix = {}) const;
  // Grows `table` to cover num_tokens tokens: first takes a reference on each of
  // `cached_prefix` (only when the table is empty; from FindCachedPrefix), then pops fresh blocks
  // from the free list (evicting the cache keys they held). Returns false and changes nothing
  // when the pool is short.
  bool Allocate(BlockTable& table, int32_t num_tokens,
                absl::Span<const BlockId> cached_prefix = {});
  // Registers the table's blocks that are full of computed tokens (tokens[0, num_computed)) and
  // not yet registered, so later sequences can share them.
  void CacheFullBlocks(BlockTable& table, absl::Span<const int32_t> tokens, int32_t num_computed);
  // Drops the table's references, tail first (so a sequence's last blocks are reused before its
  // shared prefix), and clears it.
  void Free(BlockTable& table);

  int32_t ref_count(BlockId block) const;
  bool is_cached(BlockId block) const;

  int64_t prefix_cache_queries() const { return queries_; }  // in tokens
  int64_t prefix_cache_hits() const { return hits_; }        // in tokens

  // CHECK-fails if the bookkeeping is inconsistent (free + used == total, every free block on
  // the list once, the key map and the blocks agree). For tests.
  void CheckInvariants() const;

 private:
  struct Block {
    int32_t ref_count = 0;
    std::optional<BlockKey> key;
    std::optional<BlockKey> parent_key;  // with `tokens`, confirms a key match exactly
    std::vector<int32_t> tokens;         // a cached block's tokens
    BlockId prev_free = kNoBlock, next_free = kNoBlock;  // intrusive LRU free list
  };

  // Free-list primitives. PopFreeHead evicts the block's key and returns it with ref count 1.
  BlockId PopFreeHead();
  void PushFreeTail(BlockId id);
  void Unlink(BlockId id);

  int32_t block_size_;
  uint64_t cache_salt_;
  std::vector<Block> blocks_;
  BlockId free_head_ = kNoBlock, free_tail_ = kNoBlock;
  int32_t num_free_ = 0;
  absl::flat_hash_map<BlockKey, BlockId> cached_;
  int64_t queries_ = 0, hits_ = 0;
};

}  // namespace kvfold
