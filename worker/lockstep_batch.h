// The forward batch of sequences that advance together over KV blocks laid out in order: sequence
// s owns blocks [s * blocks_per_seq, (s + 1) * blocks_per_seq), so a token's cache slot follows
// from its position. What runs a model outside the engine's scheduler: SequenceRunner (one
// sequence), perplexity and calibration windows, the batched decode benchmark.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/types/span.h"
#include "worker/llama_model.h"

namespace kvfold {

class LockstepBatch {
 public:
  // Which rows' logits the batch asks for.
  enum class Logits { kNone, kLast, kAll };  // kLast: each sequence's last row

  // num_seqs sequences of up to blocks_per_seq blocks of block_size tokens each.
  LockstepBatch(int32_t blocks_per_seq, int32_t block_size, int32_t num_seqs = 1);

  // The batch that appends positions [start, start + n) to every sequence, where `token_ids`
  // holds sequence 0's n tokens, then sequence 1's, and so on. Its spans point into this object
  // and `token_ids`: valid until the next call.
  ForwardBatch Append(absl::Span<const int32_t> token_ids, int32_t start, Logits logits);

 private:
  int32_t blocks_per_seq_, block_size_, num_seqs_;
  std::vector<int32_t> block_tables_;  // 0, 1, 2, ...: num_seqs x blocks_per_seq
  std::vector<int32_t> positions_, query_start_, context_len_, logits_rows_;
  std::vector<int64_t> slots_;
};

}  // namespace kvfold
