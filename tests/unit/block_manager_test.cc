// BlockManager on a small pool, as vLLM's prefix-cache tests do: 11 blocks of 4 tokens, exact
// block ids, ref counts and eviction order; then randomized operation sequences checked against
// a shadow model after every step.
#include "scheduler/block_manager.h"

#include <map>
#include <numeric>
#include <random>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvfold {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

constexpr int32_t kNumBlocks = 11;
constexpr int32_t kBlockSize = 4;

// Tokens [first, first + n).
std::vector<int32_t> Iota(int32_t first, int32_t n) {
  std::vector<int32_t> tokens(n);
  std::iota(tokens.begin(), tokens.end(), first);
  return tokens;
}

std::vector<int32_t> Concat(std::vector<int32_t> a, const std::vector<int32_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// Allocates a fresh table for `tokens`, marks all of them computed and caches the full blocks.
BlockTable Computed(BlockManager& blocks, const std::vector<int32_t>& tokens) {
  BlockTable table;
  EXPECT_TRUE(blocks.Allocate(table, static_cast<int32_t>(tokens.size())));
  blocks.CacheFullBlocks(table, tokens, static_cast<int32_t>(tokens.size()));
  return table;
}

TEST(BlockManagerTest, AllocatesFromTheHeadInIdOrder) {
  BlockManager blocks(kNumBlocks, kBlockSize);
  EXPECT_EQ(blocks.num_blocks(), 11);
  EXPECT_EQ(blocks.num_free_blocks(), 11);
  EXPECT_EQ(blocks.BlocksFor(0), 0);
  EXPECT_EQ(blocks.BlocksFor(4), 1);
  EXPECT_EQ(blocks.BlocksFor(5), 2);

  BlockTable a;
  ASSERT_TRUE(blocks.Allocate(a, 10));
  EXPECT_THAT(a.blocks, ElementsAre(0, 1, 2));
  ASSERT_TRUE(blocks.Allocate(a, 13));  // grows by one block
  EXPECT_THAT(a.blocks, ElementsAre(0, 1, 2, 3));
  ASSERT_TRUE(blocks.Allocate(a, 12));  // already covered: nothing changes
  EXPECT_THAT(a.blocks, ElementsAre(0, 1, 2, 3));
  EXPECT_EQ(blocks.num_free_blocks(), 7);
  EXPECT_EQ(blocks.ref_count(0), 1);
  EXPECT_EQ(blocks.ref_count(4), 0);
  blocks.CheckInvariants();
}

TEST(BlockManagerTest, ShortPoolChangesNothing) {
  BlockManager blocks(kNumBlocks, kBlockSize);
  BlockTable a;
  ASSERT_TRUE(blocks.Allocate(a, 40));  // 10 blocks
  BlockTable b;
  EXPECT_TRUE(blocks.CanAllocate(b, 4));
  EXPECT_FALSE(blocks.CanAllocate(b, 5));
  EXPECT_FALSE(blocks.Allocate(b, 5));
  EXPECT_THAT(b.blocks, IsEmpty());
  EXPECT_FALSE(blocks.Allocate(a, 45));
  EXPECT_EQ(a.blocks.size(), 10u);
  EXPECT_EQ(blocks.num_free_blocks(), 1);
  blocks.CheckInvariants();
}

TEST(BlockManagerTest, PrefixHitSharesBlocks) {
  BlockManager blocks(kNumBlocks, kBlockSize);
  const std::vector<int32_t> prompt_a = Iota(0, 10);  // blocks: [0..3] [4..7] [8 9]
  BlockTable a = Computed(blocks, prompt_a);
  EXPECT_THAT(a.blocks, ElementsAre(0, 1, 2));
  EXPECT_EQ(a.keys.size(), 2u);  // the partial third block is never cached
  EXPECT_TRUE(blocks.is_cached(0));
  EXPECT_TRUE(blocks.is_cached(1));
  EXPECT_FALSE(blocks.is_cached(2));

  // Same first 8 tokens, then different ones.
  const std::vector<int32_t> prompt_b = Concat(Iota(0, 8), {100, 101, 102});
  const std::vector<BlockId> hit = blocks.FindCachedPrefix(prompt_b);
  EXPECT_THAT(hit, ElementsAre(0, 1));
  BlockTable b;
  ASSERT_TRUE(blocks.Allocate(b, 11, hit));
  EXPECT_THAT(b.blocks, ElementsAre(0, 1, 3));
  EXPECT_EQ(b.keys, a.keys);
  EXPECT_EQ(blocks.ref_count(0), 2);
  EXPECT_EQ(blocks.ref_count(1), 2);
  EXPECT_EQ(blocks.ref_count(2), 1);
  EXPECT_EQ(blocks.ref_count(3), 1);
  EXPECT_EQ(blocks.num_free_blocks(), 7);
  EXPECT_EQ(blocks.prefix_cache_queries(), 11);
  EXPECT_EQ(blocks.prefix_cache_hits(), 8);

  // A different first block breaks the chain even when later blocks match.
  EXPECT_THAT(blocks.FindCachedPrefix(Concat({99, 1, 2, 3}, Iota(4, 4))), IsEmpty());
  blocks.CheckInvariants();
}

TEST(BlockManagerTest, FreedCachedBlocksAreFoundUntilReused) {
  BlockManager blocks(kNumBlocks, kBlockSize);
  const std::vector<int32_t> prompt = Iota(0, 10);
  BlockTable a = Computed(blocks, prompt);
  BlockTable b;
  ASSERT_TRUE(blocks.Allocate(b, 11, blocks.FindCachedPrefix(prompt)));
  EXPECT_THAT(b.blocks, ElementsAre(0, 1, 3));

  // Tail first: a frees 2 (0 and 1 are still held by b); b frees 3, 1, 0.
  blocks.Free(a);
  EXPECT_THAT(a.blocks, IsEmpty());
  EXPECT_EQ(blocks.ref_count(0), 1);
  blocks.Free(b);
  EXPECT_EQ(blocks.num_free_blocks(), 11);
  // Free list now: 4 5 6 7 8 9 10 2 3 1 0.
  EXPECT_THAT(blocks.FindCachedPrefix(prompt), ElementsAre(0, 1));

  BlockTable c;
  ASSERT_TRUE(blocks.Allocate(c, 28));  // 7 blocks from the head: never-used blocks first
  EXPECT_THAT(c.blocks, ElementsAre(4, 5, 6, 7, 8, 9, 10));
  ASSERT_TRUE(blocks.Allocate(c, 36));
  EXPECT_THAT(c.blocks, ElementsAre(4, 5, 6, 7, 8, 9, 10, 2, 3));
  EXPECT_THAT(blocks.FindCachedPrefix(prompt), ElementsAre(0, 1));
  ASSERT_TRUE(blocks.Allocate(c, 40));  // evicts block 1, the prefix's tail
  EXPECT_EQ(c.blocks.back(), 1);
  EXPECT_FALSE(blocks.is_cached(1));
  EXPECT_TRUE(blocks.is_cached(0));
  EXPECT_THAT(blocks.FindCachedPrefix(prompt), ElementsAre(0));
  ASSERT_TRUE(blocks.Allocate(c, 44));  // and the last free block, 0
  EXPECT_EQ(c.blocks.back(), 0);
  EXPECT_THAT(blocks.FindCachedPrefix(prompt), IsEmpty());
  EXPECT_EQ(blocks.num_free_blocks(), 0);
  blocks.CheckInvariants();
}

TEST(BlockManagerTest, EvictsLeastRecentlyFreedFirst) {
  BlockManager blocks(kNumBlocks, kBlockSize);
  const std::vector<int32_t> p = Iota(0, 8);
  const std::vector<int32_t> q = Iota(50, 8);
  BlockTable filler;
  ASSERT_TRUE(blocks.Allocate(filler, 28));  // blocks 0..6
  BlockTable a = Computed(blocks, p);        // 7 8
  BlockTable b = Computed(blocks, q);        // 9 10
  EXPECT_THAT(a.blocks, ElementsAre(7, 8));
  EXPECT_THAT(b.blocks, ElementsAre(9, 10));
  blocks.Free(a);  // free list: 8 7
  blocks.Free(b);  // free list: 8 7 10 9
  // Taking a cached block back off the free list keeps the others' order.
  BlockTable reuse_q;
  ASSERT_TRUE(blocks.Allocate(reuse_q, 8, blocks.FindCachedPrefix(q)));
  EXPECT_THAT(reuse_q.blocks, ElementsAre(9, 10));
  blocks.Free(reuse_q);  // free list: 8 7 10 9

  BlockTable d;
  ASSERT_TRUE(blocks.Allocate(d, 4));
  EXPECT_THAT(d.blocks, ElementsAre(8));
  EXPECT_THAT(blocks.FindCachedPrefix(p), ElementsAre(7));
  EXPECT_THAT(blocks.FindCachedPrefix(q), ElementsAre(9, 10));
  ASSERT_TRUE(blocks.Allocate(d, 8));
  EXPECT_THAT(d.blocks, ElementsAre(8, 7));
  EXPECT_THAT(blocks.FindCachedPrefix(p), IsEmpty());
  EXPECT_THAT(blocks.FindCachedPrefix(q), ElementsAre(9, 10));
  ASSERT_TRUE(blocks.Allocate(d, 12));
  EXPECT_THAT(d.blocks, ElementsAre(8, 7, 10));
  EXPECT_THAT(blocks.FindCachedPrefix(q), ElementsAre(9));
  blocks.CheckInvariants();
}

TEST(BlockManagerTest, CachedPrefixCountsAgainstTheFreePool) {
  BlockManager blocks(kNumBlocks, kBlockSize);
  const std::vector<int32_t> prompt = Iota(0, 8);
  BlockTable a = Computed(blocks, prompt);
  blocks.Free(a);
  const std::vector<BlockId> hit = blocks.FindCachedPrefix(prompt);
  ASSERT_THAT(hit, ElementsAre(0, 1));
  BlockTable b;
  EXPECT_TRUE(blocks.CanAllocate(b, 44, hit));   // 2 cached + 9 fresh = the whole pool
  EXPECT_FALSE(blocks.CanAllocate(b, 45, hit));  // one more
  ASSERT_TRUE(blocks.Allocate(b, 44, hit));
  EXPECT_THAT(b.blocks, ElementsAre(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10));
  EXPECT_EQ(blocks.num_free_blocks(), 0);
  blocks.CheckInvariants();
}

TEST(BlockManagerTest, OnlyComputedFullBlocksAreCached) {
  BlockManager blocks(kNumBlocks, kBlockSize);
  const std::vector<int32_t> tokens = Iota(0, 12);
  BlockTable a;
  ASSERT_TRUE(blocks.Allocate(a, 12));
  blocks.CacheFullBlocks(a, tokens, 7);  // block 1 holds 3 computed tokens: not yet
  EXPECT_EQ(a.keys.size(), 1u);
  EXPECT_TRUE(blocks.is_cached(0));
  EXPECT_FALSE(blocks.is_cached(1));
  blocks.CacheFullBlocks(a, tokens, 12);
  EXPECT_EQ(a.keys.size(), 3u);
  EXPECT_THAT(blocks.FindCachedPrefix(tokens), ElementsAre(0, 1, 2));
  EXPECT_THAT(blocks.FindCachedPrefix(Iota(0, 11)), ElementsAre(0, 1));
  blocks.CheckInvariants();
}

TEST(BlockManagerTest, SameBlockComputedTwiceStaysPrivate) {
  BlockManager blocks(kNumBlocks, kBlockSize);
  const std::vector<int32_t> tokens = Iota(0, 8);
  BlockTable a;
  BlockTable b;
  ASSERT_TRUE(blocks.Allocate(a, 8));  // both missed the cache in the same step
  ASSERT_TRUE(blocks.Allocate(b, 8));
  blocks.CacheFullBlocks(a, tokens, 8);
  blocks.CacheFullBlocks(b, tokens, 8);
  EXPECT_EQ(a.keys, b.keys);
  EXPECT_THAT(b.blocks, ElementsAre(2, 3));
  EXPECT_FALSE(blocks.is_cached(2));
  EXPECT_FALSE(blocks.is_cached(3));
  blocks.Free(a);
  blocks.Free(b);
  EXPECT_THAT(blocks.FindCachedPrefix(tokens), ElementsAre(0, 1));
  blocks.CheckInvariants();
}

TEST(BlockManagerTest, SaltSeparatesCaches) {
  const std::vector<int32_t> tokens = Iota(0, 8);
  BlockManager plain(kNumBlocks, kBlockSize, /*cache_salt=*/0);
  BlockManager folded(kNumBlocks, kBlockSize, /*cache_salt=*/7);
  BlockManager folded_again(kNumBlocks, kBlockSize, /*cache_salt=*/7);
  const BlockTable a = Computed(plain, tokens);
  const BlockTable b = Computed(folded, tokens);
  const BlockTable c = Computed(folded_again, tokens);
  EXPECT_NE(a.keys[0], b.keys[0]);
  EXPECT_NE(a.keys[1], b.keys[1]);
  EXPECT_EQ(b.keys, c.keys);  // keys are deterministic: same salt, same chain
}

// --- Randomized operation sequences -------------------------------------------------------------

// A sequence's tokens and what it holds, plus a shadow of each block's contents (the "KV" the
// worker would have written) to check that every cache hit returns blocks with the right tokens.
struct ShadowSequence {
  std::vector<int32_t> tokens;
  int32_t num_computed = 0;
  BlockTable table;
};

class RandomOps {
 public:
  explicit RandomOps(uint32_t seed)
      : rng_(seed), blocks_(kNumBlocks, kBlockSize), contents_(kNumBlocks) {}

  void Run(int num_ops) {
    for (int op = 0; op < num_ops; ++op) {
      switch (Uniform(0, 3)) {
        case 0:
          Start();
          break;
        case 1:
          Grow();
          break;
        case 2:
          Compute();
          break;
        default:
          FreeOne();
      }
      blocks_.CheckInvariants();
      CheckOwnership();
      if (::testing::Test::HasFailure()) return;
    }
  }
  int64_t num_hit_tokens() const { return blocks_.prefix_cache_hits(); }

 private:
  int Uniform(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng_); }

  // A prompt that often shares a prefix with earlier ones: a few templates, a random tail.
  std::vector<int32_t> RandomPrompt() {
    std::vector<int32_t> tokens;
    const int template_id = Uniform(0, 2);
    const int shared = Uniform(0, 3) * kBlockSize;
    for (int i = 0; i < shared; ++i) tokens.push_back(template_id * 1000 + i);
    const int tail = Uniform(1, 6);
    for (int i = 0; i < tail; ++i) tokens.push_back(Uniform(0, 3));
    return tokens;
  }

  void Start() {
    ShadowSequence seq;
    seq.tokens = RandomPrompt();
    const auto n = static_cast<int32_t>(seq.tokens.size());
    const std::vector<BlockId> hit =
        blocks_.FindCachedPrefix(absl::MakeConstSpan(seq.tokens).first(n - 1));
    for (size_t i = 0; i < hit.size(); ++i) {
      const std::vector<int32_t> expected(seq.tokens.begin() + i * kBlockSize,
                                          seq.tokens.begin() + (i + 1) * kBlockSize);
      ASSERT_EQ(contents_[hit[i]], expected) << "cache hit on block " << hit[i];
    }
    if (!blocks_.Allocate(seq.table, n, hit)) return;
    seq.num_computed = static_cast<int32_t>(hit.size()) * kBlockSize;
    for (size_t i = hit.size(); i < seq.table.blocks.size(); ++i) {
      contents_[seq.table.blocks[i]].clear();  // fresh: whatever it held is overwritten
    }
    live_.push_back(std::move(seq));
  }

  void Grow() {
    if (live_.empty()) return;
    ShadowSequence& seq = live_[Uniform(0, static_cast<int>(live_.size()) - 1)];
    const size_t old_blocks = seq.table.blocks.size();
    const int extra = Uniform(1, 5);
    if (!blocks_.Allocate(seq.table, static_cast<int32_t>(seq.tokens.size()) + extra)) return;
    for (int i = 0; i < extra; ++i) seq.tokens.push_back(Uniform(0, 3));
    for (size_t i = old_blocks; i < seq.table.blocks.size(); ++i) {
      contents_[seq.table.blocks[i]].clear();
    }
  }

  // Computes some of the remaining tokens ("writes KV") and caches the full blocks.
  void Compute() {
    if (live_.empty()) return;
    ShadowSequence& seq = live_[Uniform(0, static_cast<int>(live_.size()) - 1)];
    const auto n = static_cast<int32_t>(seq.tokens.size());
    seq.num_computed = Uniform(seq.num_computed, n);
    for (int32_t i = 0; i < seq.num_computed / kBlockSize; ++i) {
      contents_[seq.table.blocks[i]].assign(seq.tokens.begin() + i * kBlockSize,
                                            seq.tokens.begin() + (i + 1) * kBlockSize);
    }
    blocks_.CacheFullBlocks(seq.table, seq.tokens, seq.num_computed);
  }

  void FreeOne() {
    if (live_.empty()) return;
    const int i = Uniform(0, static_cast<int>(live_.size()) - 1);
    blocks_.Free(live_[i].table);
    live_.erase(live_.begin() + i);
  }

  // Every reference is held by exactly one live table slot; a table never holds a block twice.
  void CheckOwnership() {
    std::map<BlockId, int32_t> refs;
    for (const ShadowSequence& seq : live_) {
      std::map<BlockId, int32_t> mine;
      for (BlockId id : seq.table.blocks) {
        ASSERT_EQ(++mine[id], 1) << "a table holds block " << id << " twice";
        ++refs[id];
      }
      ASSERT_LE(seq.table.keys.size(), seq.table.blocks.size());
    }
    int32_t used = 0;
    for (BlockId id = 0; id < kNumBlocks; ++id) {
      ASSERT_EQ(blocks_.ref_count(id), refs[id]) << "block " << id;
      if (refs[id] > 0) ++used;
    }
    ASSERT_EQ(blocks_.num_free_blocks() + used, kNumBlocks);
  }

  std::mt19937 rng_;
  BlockManager blocks_;
  std::vector<std::vector<int32_t>> contents_;  // by block id
  std::vector<ShadowSequence> live_;
};

TEST(BlockManagerTest, RandomOperationSequencesKeepInvariants) {
  int64_t num_hit_tokens = 0;
  for (uint32_t seed = 1; seed <= 300; ++seed) {
    SCOPED_TRACE(::testing::Message() << "seed " << seed);
    RandomOps ops(seed);
    ops.Run(400);
    if (HasFailure()) return;
    num_hit_tokens += ops.num_hit_tokens();
  }
  EXPECT_GT(num_hit_tokens, 300 * 100) << "the sequences should exercise the prefix cache";
}

}  // namespace
}  // namespace kvfold
