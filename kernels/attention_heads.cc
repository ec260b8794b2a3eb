#include "kernels/attention_heads.h"

#include <algorithm>
#include <string_view>

namespace kvfold {
namespace {

bool IsCacheDtype(DType t) { return t == DType::kF32 || t == DType::kBF16; }

// One of K or V of a cache layer: [slots, heads * head_dim], F32 or BF16, whole blocks.
void CheckCacheArray(const TensorView& t, int32_t heads, const KvCacheLayer& layer,
                     std::string_view what) {
  CHECK(layer.block_size > 0 && layer.head_dim > 0)
      << what << ": block_size " << layer.block_size << ", head_dim " << layer.head_dim;
  CHECK(heads > 0) << what << ": the layer stores no heads";
  CHECK(IsCacheDtype(t.dtype)) << what << ": dtype " << DTypeName(t.dtype) << " is not F32 or BF16";
  CHECK_EQ(t.cols, static_cast<int64_t>(heads) * layer.head_dim)
      << what << ": columns must be heads * head_dim";
  CHECK_EQ(t.rows % layer.block_size, 0) << what << ": rows must be whole blocks";
  CHECK(t.data != nullptr || t.rows == 0) << what << ": no data";
}

bool Overlap(const TensorView& a, const TensorView& b) {
  if (a.data == nullptr || b.data == nullptr || a.nbytes() == 0 || b.nbytes() == 0) return false;
  const char* a0 = static_cast<const char*>(a.data);
  const char* b0 = static_cast<const char*>(b.data);
  return a0 < b0 + b.nbytes() && b0 < a0 + a.nbytes();
}

// The batch against n query rows and a pool of num_blocks blocks; returns the largest context.
int32_t CheckBatch(const AttentionBatch& batch, int64_t n, int64_t num_blocks, int32_t block_size) {
  const int32_t num_seqs = batch.num_seqs();
  CHECK_EQ(batch.query_start.size(), static_cast<size_t>(num_seqs) + 1)
      << "AttentionBatch: query_start must have num_seqs + 1 entries";
  CHECK_EQ(batch.query_start.front(), 0) << "AttentionBatch: query_start[0]";
  CHECK_EQ(batch.query_start.back(), n) << "AttentionBatch: query_start must end at the row count";
  CHECK_GE(batch.max_blocks_per_seq, 0);
  CHECK_EQ(batch.block_tables.size(),
           static_cast<size_t>(num_seqs) * static_cast<size_t>(batch.max_blocks_per_seq))
      << "AttentionBatch: block_tables must be num_seqs x max_blocks_per_seq";
  int32_t max_context = 0;
  for (int32_t s = 0; s < num_seqs; ++s) {
    const int32_t q_len = batch.query_start[s + 1] - batch.query_start[s];
    const int32_t context = batch.context_len[s];
    CHECK_GE(q_len, 0) << "AttentionBatch: query_start decreases at sequence " << s;
    CHECK_GE(context, q_len) << "AttentionBatch: context_len below the query length (sequence " << s
                             << ")";
    max_context = std::max(max_context, context);
    const int64_t blocks_used = (static_cast<int64_t>(context) + block_size - 1) / block_size;
    CHECK_LE(blocks_used, batch.max_blocks_per_seq)
        << "AttentionBatch: sequence " << s << " needs more blocks than its table row has";
    for (int64_t b = 0; b < blocks_used; ++b) {
      const int32_t block = batch.block_tables[s * batch.max_blocks_per_seq + b];
      CHECK(block >= 0 && block < num_blocks) << "AttentionBatch: sequence " << s << " block id "
                                              << block << " outside [0, " << num_blocks << ")";
    }
  }
  return max_context;
}

// Entry (map row m, head h) of one map span, or the GQA default when the span is empty.
class MapSpan {
 public:
  MapSpan(absl::Span<const int32_t> span, int32_t num_heads, int32_t num_seqs,
          std::string_view name)
      : span_(span), num_heads_(num_heads), name_(name) {
    CHECK(span.empty() || span.size() == static_cast<size_t>(num_heads) ||
          span.size() == static_cast<size_t>(num_heads) * num_seqs)
        << "AttentionHeadMap." << name << " has " << span.size() << " entries; expected 0, "
        << num_heads << " (num_heads) or " << static_cast<int64_t>(num_heads) * num_seqs
        << " (num_seqs * num_heads)";
  }
  bool per_seq() const { return span_.size() > static_cast<size_t>(num_heads_); }
  bool empty() const { return span_.empty(); }
  // `group` heads share one head of `limit` by default.
  int32_t At(int32_t m, int32_t h, int32_t limit, int32_t group) const {
    if (span_.empty()) return h / group;
    const int32_t value = span_[per_seq() ? static_cast<size_t>(m) * num_heads_ + h : h];
    CHECK(value >= 0 && value < limit)
        << "AttentionHeadMap." << name_ << "[" << (per_seq() ? m : 0) << "][" << h
        << "] = " << value << " outside [0, " << limit << ")";
    return value;
  }

 private:
  absl::Span<const int32_t> span_;
  int32_t num_heads_;
  std::string_view name_;
};

// Heads per default-map group: num_heads must be a multiple of the layer's head count.
int32_t DefaultGroup(int32_t num_heads, int32_t heads, std::string_view what) {
  CHECK(heads > 0 && num_heads % heads == 0)
      << "AttentionHeadMap: an empty " << what << " span means GQA, which needs num_heads ("
      << num_heads << ") to be a multiple of the layer's " << what << " count (" << heads << ")";
  return num_heads / heads;
}

}  // namespace

AttentionHeadGroups PrepareFoldedAttention(const TensorView& q, const KvCacheLayer& k_layer,
                                           const KvCacheLayer& v_layer,
                                           const AttentionHeadMap& heads,
                                           const AttentionBatch& batch, int num_heads,
                                           const TensorView& out, const AttentionProbs* probs) {
  CHECK_GT(num_heads, 0) << "FoldedPagedAttention: num_heads";
  const bool reading = probs != nullptr && probs->mode == AttentionProbs::Mode::kRead;
  const int32_t d = v_layer.head_dim;
  CheckCacheArray(v_layer.v, v_layer.num_v_heads, v_layer, "FoldedPagedAttention V layer's v");
  CHECK(out.dtype == DType::kF32) << "FoldedPagedAttention: out must be F32";
  CHECK_EQ(out.cols, static_cast<int64_t>(num_heads) * d)
      << "FoldedPagedAttention: out must be [n, num_heads * head_dim]";
  const int64_t n = out.rows;

  AttentionHeadGroups groups;
  groups.num_heads = num_heads;
  groups.reads_k = !reading;
  if (groups.reads_k) {
    CheckCacheArray(k_layer.k, k_layer.num_k_heads, k_layer, "FoldedPagedAttention K layer's k");
    CHECK(k_layer.k.dtype == v_layer.v.dtype) << "FoldedPagedAttention: K and V caches differ in "
                                              << "dtype";
    CHECK_EQ(k_layer.head_dim, d) << "FoldedPagedAttention: K and V layers differ in head_dim";
    CHECK_EQ(k_layer.block_size, v_layer.block_size)
        << "FoldedPagedAttention: K and V layers differ in block_size";
    CHECK_EQ(k_layer.k.rows, v_layer.v.rows)
        << "FoldedPagedAttention: K and V layers hold different numbers of slots";
    CHECK(q.dtype == DType::kF32) << "FoldedPagedAttention: q must be F32";
    CHECK_EQ(q.rows, n) << "FoldedPagedAttention: q and out differ in rows";
    CHECK(q.cols > 0 && q.cols % d == 0)
        << "FoldedPagedAttention: q has " << q.cols << " columns, not a multiple of head_dim " << d;
    CHECK(!Overlap(q, out)) << "FoldedPagedAttention: out must not overlap q";
    groups.num_score_heads = static_cast<int32_t>(q.cols / d);
  }
  groups.max_context =
      CheckBatch(batch, n, v_layer.v.rows / v_layer.block_size, v_layer.block_size);
  if (probs != nullptr) {
    const TensorView& p = probs->p;
    CHECK(p.dtype == DType::kF32) << "AttentionProbs: p must be F32";
    CHECK_GE(p.cols, groups.max_context)
        << "AttentionProbs: p has fewer columns than the longest context";
    if (reading && n > 0) {
      CHECK(p.rows > 0 && p.rows % n == 0)
          << "AttentionProbs: p must have num_rows * num_score_heads rows (" << p.rows << " for "
          << n << " query rows)";
      groups.num_score_heads = static_cast<int32_t>(p.rows / n);
    } else if (reading) {
      groups.num_score_heads = num_heads;  // no rows: nothing is read
    } else if (!reading) {
      CHECK_EQ(p.rows, n * groups.num_score_heads)
          << "AttentionProbs: p must have num_rows * num_score_heads rows";
    }
    CHECK(!Overlap(p, out)) << "AttentionProbs: p must not overlap out";
  }

  const int32_t num_seqs = batch.num_seqs();
  const MapSpan score(heads.score_head, num_heads, num_seqs, "score_head");
  const MapSpan k_map(heads.k_head, num_heads, num_seqs, "k_head");
  const MapSpan v_map(heads.v_head, num_heads, num_seqs, "v_head");
  CHECK(!score.empty() || groups.num_score_heads == num_heads)
      << "AttentionHeadMap: an empty score_head span means score head h for output head h, which "
      << "needs " << num_heads << " score heads, not " << groups.num_score_heads;
  const int32_t score_group = 1;
  const int32_t k_group = k_map.empty() && groups.reads_k
                              ? DefaultGroup(num_heads, k_layer.num_k_heads, "K head")
                              : num_heads;  // reading P: K heads are not used
  const int32_t v_group =
      v_map.empty() ? DefaultGroup(num_heads, v_layer.num_v_heads, "V head") : 1;
  const int32_t k_limit = groups.reads_k ? k_layer.num_k_heads : 1 << 30;

  groups.num_map_rows = (score.per_seq() || k_map.per_seq() || v_map.per_seq()) ? num_seqs : 1;
  const int32_t h_count = num_heads;
  const int32_t rows = groups.num_map_rows;
  groups.num_groups.assign(rows, 0);
  groups.score_head.assign(static_cast<size_t>(rows) * h_count, 0);
  groups.k_head.assign(static_cast<size_t>(rows) * h_count, 0);
  groups.member_start.assign(static_cast<size_t>(rows) * (h_count + 1), 0);
  groups.member_out_head.assign(static_cast<size_t>(rows) * h_count, 0);
  groups.member_v_head.assign(static_cast<size_t>(rows) * h_count, 0);
  std::vector<int32_t> group_of(h_count), count(h_count);
  for (int32_t m = 0; m < rows; ++m) {
    const size_t base = static_cast<size_t>(m) * h_count;
    int32_t& num_groups = groups.num_groups[m];
    for (int32_t h = 0; h < h_count; ++h) {
      const int32_t sh = score.At(m, h, groups.num_score_heads, score_group);
      const int32_t kh = k_map.At(m, h, k_limit, k_group);
      int32_t g = 0;
      while (g < num_groups &&
             !(groups.score_head[base + g] == sh && groups.k_head[base + g] == kh)) {
        if (groups.score_head[base + g] == sh) {
          CHECK(!(probs != nullptr && !reading))
              << "AttentionProbs (write): score head " << sh << " is used with K heads "
              << groups.k_head[base + g] << " and " << kh << " in map row " << m
              << "; stored probabilities are keyed by score head";
        }
        ++g;
      }
      if (g == num_groups) {
        groups.score_head[base + g] = sh;
        groups.k_head[base + g] = kh;
        count[g] = 0;
        ++num_groups;
      }
      group_of[h] = g;
      ++count[g];
    }
    // Members laid out group by group, ascending output head within a group.
    int32_t* start = groups.member_start.data() + static_cast<size_t>(m) * (h_count + 1);
    for (int32_t g = 0; g < num_groups; ++g) start[g + 1] = start[g] + count[g];
    for (int32_t g = num_groups; g < h_count; ++g) start[g + 1] = start[g];
    std::vector<int32_t> fill(start, start + num_groups);
    for (int32_t h = 0; h < h_count; ++h) {
      const int32_t slot = fill[group_of[h]]++;
      groups.member_out_head[base + slot] = h;
      groups.member_v_head[base + slot] = v_map.At(m, h, v_layer.num_v_heads, v_group);
    }
  }
  return groups;
}

void CheckWriteKv(const TensorView& k, const TensorView& v, const AttentionBatch& batch,
                  const KvCacheLayer& cache) {
  const auto n = static_cast<int64_t>(batch.slot_mapping.size());
  CheckCacheArray(cache.v, cache.num_v_heads, cache, "WriteKv cache v");
  CHECK(v.dtype == DType::kF32) << "WriteKv: v must be F32";
  CHECK(v.rows == n && v.cols == cache.v.cols)
      << "WriteKv: v is [" << v.rows << ", " << v.cols << "], expected [" << n << ", "
      << cache.v.cols << "] (num_v_heads * head_dim)";
  if (cache.num_k_heads > 0) {
    CheckCacheArray(cache.k, cache.num_k_heads, cache, "WriteKv cache k");
    CHECK(cache.k.dtype == cache.v.dtype) << "WriteKv: K and V caches differ in dtype";
    CHECK_EQ(cache.k.rows, cache.v.rows) << "WriteKv: K and V caches differ in slots";
    CHECK(k.dtype == DType::kF32) << "WriteKv: k must be F32";
    CHECK(k.rows == n && k.cols == cache.k.cols)
        << "WriteKv: k is [" << k.rows << ", " << k.cols << "], expected [" << n << ", "
        << cache.k.cols << "] (num_k_heads * head_dim, the stored heads only)";
  }
  for (const int64_t slot : batch.slot_mapping) {
    CHECK(slot < cache.v.rows) << "WriteKv: slot " << slot << " outside [0, " << cache.v.rows
                               << ") (negative: padding, skipped)";
  }
}

}  // namespace kvfold
