#include "scheduler/block_manager.h"

#include <algorithm>

#include "glog/logging.h"

namespace kvfold {
namespace {

// splitmix64's finalizer: a cheap, well-mixed step for the hash chain. Deterministic across runs,
// unlike absl::Hash, so cache keys can be logged and compared between processes.
uint64_t Mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// The key of a full block: hash(parent key, its tokens, cache salt). The first block's parent is
// absent, which hashes differently from any key.
BlockKey ChainKey(std::optional<BlockKey> parent, absl::Span<const int32_t> tokens, uint64_t salt) {
  uint64_t h = Mix(salt ^ (parent.has_value() ? Mix(*parent) : 0x5bd1e995ULL));
  for (int32_t token : tokens) h = Mix(h ^ static_cast<uint32_t>(token));
  return h;
}

}  // namespace

BlockManager::BlockManager(int32_t num_blocks, int32_t block_size, uint64_t cache_salt)
    : block_size_(block_size), cache_salt_(cache_salt), blocks_(num_blocks) {
  CHECK_GT(num_blocks, 0);
  CHECK_GT(block_size, 0);
  for (BlockId id = 0; id < num_blocks; ++id) PushFreeTail(id);
}

int32_t BlockManager::num_blocks() const { return static_cast<int32_t>(blocks_.size()); }

int32_t BlockManager::num_free_blocks() const { return num_free_; }

int32_t BlockManager::BlocksFor(int32_t num_tokens) const {
  return (num_tokens + block_size_ - 1) / block_size_;
}

std::vector<BlockId> BlockManager::FindCachedPrefix(absl::Span<const int32_t> tokens) {
  std::vector<BlockId> found;
  std::optional<BlockKey> parent;
  const size_t num_full = tokens.size() / block_size_;
  for (size_t i = 0; i < num_full; ++i) {
    absl::Span<const int32_t> block_tokens = tokens.subspan(i * block_size_, block_size_);
    const BlockKey key = ChainKey(parent, block_tokens, cache_salt_);
    auto it = cached_.find(key);
    if (it == cached_.end()) break;
    const Block& block = blocks_[it->second];
    // The key names the chain; the stored tokens and parent key confirm it exactly.
    if (block.parent_key != parent || !std::equal(block_tokens.begin(), block_tokens.end(),
                                                  block.tokens.begin(), block.tokens.end())) {
      break;
    }
    found.push_back(it->second);
    parent = key;
  }
  queries_ += static_cast<int64_t>(tokens.size());
  hits_ += static_cast<int64_t>(found.size()) * block_size_;
  return found;
}

bool BlockManager::CanAllocate(const BlockTable& table, int32_t num_tokens,
                               absl::Span<const BlockId> cached_prefix) const {
  CHECK(cached_prefix.empty() || table.blocks.empty())
      << "a cached prefix can only start an empty table";
  // Cached blocks nobody holds sit on the free list: taking them shrinks what is left to pop.
  int32_t free_after_prefix = num_free_;
  for (BlockId id : cached_prefix) {
    if (blocks_[id].ref_count == 0) --free_after_prefix;
  }
  const int32_t held = static_cast<int32_t>(table.blocks.size() + cached_prefix.size());
  const int32_t fresh = std::max(0, BlocksFor(num_tokens) - held);
  return fresh <= free_after_prefix;
}

bool BlockManager::Allocate(BlockTable& table, int32_t num_tokens,
                            absl::Span<const BlockId> cached_prefix) {
  if (!CanAllocate(table, num_tokens, cached_prefix)) return false;
  for (BlockId id : cached_prefix) {
    Block& block = blocks_[id];
    CHECK(block.key.has_value()) << "block " << id << " is not cached";
    if (block.ref_count == 0) Unlink(id);
    ++block.ref_count;
    table.blocks.push_back(id);
    table.keys.push_back(*block.key);
  }
  const int32_t needed = BlocksFor(num_tokens);
  while (static_cast<int32_t>(table.blocks.size()) < needed) {
    table.blocks.push_back(PopFreeHead());
  }
  return true;
}

void BlockManager::CacheFullBlocks(BlockTable& table, absl::Span<const int32_t> tokens,
                                   int32_t num_computed) {
  CHECK_LE(num_computed, static_cast<int32_t>(tokens.size()));
  const size_t num_full =
      std::min(static_cast<size_t>(num_computed / block_size_), table.blocks.size());
  for (size_t i = table.keys.size(); i < num_full; ++i) {
    std::optional<BlockKey> parent;
    if (i > 0) parent = table.keys[i - 1];
    absl::Span<const int32_t> block_tokens = tokens.subspan(i * block_size_, block_size_);
    const BlockKey key = ChainKey(parent, block_tokens, cache_salt_);
    table.keys.push_back(key);
    // Another sequence computed the same block first (both missed the cache in one step): keep
    // that one registered; this copy stays private and is reused when freed.
    if (!cached_.try_emplace(key, table.blocks[i]).second) continue;
    Block& block = blocks_[table.blocks[i]];
    CHECK(!block.key.has_value()) << "block " << table.blocks[i] << " cached twice";
    block.key = key;
    block.parent_key = parent;
    block.tokens.assign(block_tokens.begin(), block_tokens.end());
  }
}

void BlockManager::Free(BlockTable& table) {
  for (auto it = table.blocks.rbegin(); it != table.blocks.rend(); ++it) {
    Block& block = blocks_[*it];
    CHECK_GT(block.ref_count, 0) << "block " << *it << " freed twice";
    if (--block.ref_count == 0) PushFreeTail(*it);
  }
  table.blocks.clear();
  table.keys.clear();
}

int32_t BlockManager::ref_count(BlockId block) const { return blocks_.at(block).ref_count; }

bool BlockManager::is_cached(BlockId block) const { return blocks_.at(block).key.has_value(); }

void BlockManager::CheckInvariants() const {
  std::vector<bool> on_free_list(blocks_.size(), false);
  int32_t listed = 0;
  BlockId prev = kNoBlock;
  for (BlockId id = free_head_; id != kNoBlock; id = blocks_[id].next_free) {
    CHECK_GE(id, 0);
    CHECK_LT(id, num_blocks());
    CHECK(!on_free_list[id]) << "block " << id << " is on the free list twice";
    CHECK_EQ(blocks_[id].prev_free, prev) << "broken back link at block " << id;
    CHECK_EQ(blocks_[id].ref_count, 0) << "held block " << id << " is on the free list";
    on_free_list[id] = true;
    prev = id;
    ++listed;
  }
  CHECK_EQ(prev, free_tail_);
  CHECK_EQ(listed, num_free_);
  int32_t used = 0;
  for (BlockId id = 0; id < num_blocks(); ++id) {
    const Block& block = blocks_[id];
    CHECK_GE(block.ref_count, 0);
    if (block.ref_count > 0) ++used;
    CHECK(block.ref_count > 0 || on_free_list[id]) << "block " << id << " leaked";
    if (block.key.has_value()) {
      auto it = cached_.find(*block.key);
      CHECK(it != cached_.end() && it->second == id) << "block " << id << " key not mapped";
      CHECK_EQ(static_cast<int32_t>(block.tokens.size()), block_size_);
    }
  }
  CHECK_EQ(num_free_ + used, num_blocks()) << "free + used != total";
  for (const auto& [key, id] : cached_) {
    CHECK(blocks_[id].key == key) << "cache maps a key to block " << id << " which lacks it";
  }
}

BlockId BlockManager::PopFreeHead() {
  CHECK_NE(free_head_, kNoBlock) << "the pool is empty";
  const BlockId id = free_head_;
  Unlink(id);
  Block& block = blocks_[id];
  if (block.key.has_value()) {  // evict: the block's old contents are about to be overwritten
    cached_.erase(*block.key);
    block.key.reset();
    block.parent_key.reset();
    block.tokens.clear();
  }
  block.ref_count = 1;
  return id;
}

void BlockManager::PushFreeTail(BlockId id) {
  Block& block = blocks_[id];
  block.prev_free = free_tail_;
  block.next_free = kNoBlock;
  if (free_tail_ != kNoBlock) {
    blocks_[free_tail_].next_free = id;
  } else {
    free_head_ = id;
  }
  free_tail_ = id;
  ++num_free_;
}

void BlockManager::Unlink(BlockId id) {
  Block& block = blocks_[id];
  if (block.prev_free != kNoBlock) {
    blocks_[block.prev_free].next_free = block.next_free;
  } else {
    free_head_ = block.next_free;
  }
  if (block.next_free != kNoBlock) {
    blocks_[block.next_free].prev_free = block.prev_free;
  } else {
    free_tail_ = block.prev_free;
  }
  block.prev_free = block.next_free = kNoBlock;
  --num_free_;
}

}  // namespace kvfold
