// Host-side preparation of a FoldedPagedAttention call, shared by both backends: the call is
// validated once (clear CHECK messages) and the head map is turned into head groups, the output
// heads of a sequence that share one attention-probability row P ("one P, many V").
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/ops.h"

namespace kvfold {

struct AttentionHeadGroups {
  int32_t num_heads = 0;        // output heads (H)
  int32_t num_map_rows = 0;     // 1, or num_seqs when any map span is per sequence
  int32_t num_score_heads = 0;  // heads of q (or of the probability rows when reading them)
  int32_t max_context = 0;      // the largest context_len of the batch
  bool reads_k = true;          // false when P is read from an AttentionProbs
  // Map row m has num_groups[m] groups, in order of their lowest output head. Group g of row m is
  // entry m * H + g of score_head / k_head; its members are entries [member_start[m * (H + 1) + g],
  // member_start[m * (H + 1) + g + 1]) of member_out_head / member_v_head (each map row's members
  // fill its H entries, ascending output head within a group).
  std::vector<int32_t> num_groups;
  std::vector<int32_t> score_head;
  std::vector<int32_t> k_head;
  std::vector<int32_t> member_start;
  std::vector<int32_t> member_out_head;
  std::vector<int32_t> member_v_head;

  int32_t MapRow(int32_t seq) const { return num_map_rows == 1 ? 0 : seq; }
};

// Checks every argument of FoldedPagedAttention (shapes, dtypes, batch, block ids, head map,
// probabilities workspace) and builds the head groups. CHECK-fails naming the problem.
AttentionHeadGroups PrepareFoldedAttention(const TensorView& q, const KvCacheLayer& k_layer,
                                           const KvCacheLayer& v_layer,
                                           const AttentionHeadMap& heads,
                                           const AttentionBatch& batch, int num_heads,
                                           const TensorView& out, const AttentionProbs* probs);

// Checks WriteKv's arguments: k [n, num_k_heads * head_dim] F32 (ignored without K heads),
// v [n, num_v_heads * head_dim] F32, n == slot_mapping.size(), every slot inside the cache.
void CheckWriteKv(const TensorView& k, const TensorView& v, const AttentionBatch& batch,
                  const KvCacheLayer& cache);

}  // namespace kvfold
