// The op interface: every kernel the model needs, implemented once per backend (kernels/cpu,
// kernels/cuda). Model code is written against this header only.
//
// Conventions:
// - Tensors are row-major 2-D views (rows x cols). Activations are F32; weights may be F32, F16,
//   BF16 or one of llama.cpp's block-quantized types (Q8_0, Q4_0, Q4_1). Accumulation is always
//   F32.
// - A batch is a flat list of tokens from several sequences. Sequence s owns the query rows
//   [query_start[s], query_start[s + 1]).
// - Determinism: every output element is reduced in a fixed order that depends only on the shapes
//   of that sequence, never on how many tokens or sequences share the batch or how many threads
//   run. A sequence's logits are therefore bit-identical whatever else is in the batch.
//   On the CPU backend every ISA path (generic, AVX2, AVX-512; KVFOLD_ISA) gives the same bits too:
//   no fused multiply-adds, one 16-lane order. A quantized matmul (Q8_0/Q4_0/Q4_1 weights) works
//   as llama.cpp's does: it first rounds each token's activations to Q8 blocks (per 32 elements
//   d = amax / 127, q = round-half-even(x / d)), then sums exact integer block dot products
//   scaled by d_w · d_x (Q4_1 adds m_w · d_x · Σq_x) in one fixed F32 order
//   (kernels/cpu/qmatmul_kernel.inc). It is therefore not the F32 matmul over the dequantized
//   weights: each output differs from that by at most Σ_blocks amax / 254 · Σ|w| plus rounding.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "glog/logging.h"

namespace kvfold {

// Quantized types are llama.cpp's (ggml) block formats, byte for byte, so GGUF tensor data is used
// in place. Each row is cols / 32 blocks of 32 consecutive elements (cols % 32 == 0); d and m are
// IEEE F16, little-endian:
//   kQ8_0: {f16 d; int8 q[32]}        34 bytes   value[i] = q[i] * d
//   kQ4_0: {f16 d; uint8 qs[16]}      18 bytes   value[i] = (nibble(i) - 8) * d
//   kQ4_1: {f16 d; f16 m; uint8 qs[16]} 20 bytes value[i] = nibble(i) * d + m
// where nibble(i) = qs[i] & 15 for i < 16 and qs[i - 16] >> 4 for i >= 16. Values are computed in
// F32 exactly as written (one rounding per operation).
enum class DType : uint8_t { kF32, kF16, kBF16, kQ8_0, kQ4_0, kQ4_1 };

constexpr bool IsQuantized(DType t) { return t >= DType::kQ8_0; }
constexpr int64_t kQuantBlock = 32;  // elements per quantized block
// Bytes per element of an unquantized type; 0 for quantized types (use RowBytes).
constexpr size_t DTypeSize(DType t) {
  return t == DType::kF32 ? 4 : (t == DType::kF16 || t == DType::kBF16) ? 2 : 0;
}
// Bytes per block of a quantized type (kQuantBlock elements); DTypeSize for the others.
constexpr size_t BlockBytes(DType t) {
  switch (t) {
    case DType::kQ8_0:
      return 34;
    case DType::kQ4_0:
      return 18;
    case DType::kQ4_1:
      return 20;
    default:
      return DTypeSize(t);
  }
}
// Whether a row of `cols` elements can be stored in `t` (quantized rows hold whole blocks).
constexpr bool ValidCols(DType t, int64_t cols) {
  return cols >= 0 && (!IsQuantized(t) || cols % kQuantBlock == 0);
}
// Bytes of one row of `cols` elements. CHECKs ValidCols.
size_t RowBytes(DType t, int64_t cols);
std::string_view DTypeName(DType t);

enum class Device : uint8_t { kCpu, kCuda };

// A non-owning view of a row-major 2-D array. For quantized dtypes `cols` counts logical elements
// (a multiple of 32) and rows are RowBytes(dtype, cols) apart.
struct TensorView {
  void* data = nullptr;
  DType dtype = DType::kF32;
  int64_t rows = 0;
  int64_t cols = 0;

  int64_t numel() const { return rows * cols; }
  size_t row_bytes() const { return RowBytes(dtype, cols); }
  size_t nbytes() const { return static_cast<size_t>(rows) * row_bytes(); }
  float* f32() const {
    DCHECK(dtype == DType::kF32);
    return static_cast<float*>(data);
  }
  // Rows [begin, begin + count) of this view.
  TensorView Rows(int64_t begin, int64_t count) const {
    DCHECK(begin >= 0 && count >= 0 && begin + count <= rows);
    return {static_cast<char*>(data) + begin * row_bytes(), dtype, count, cols};
  }
};

// An owning tensor allocated by a backend.
class Tensor {
 public:
  using Deleter = void (*)(void*);
  Tensor() = default;
  Tensor(TensorView view, Deleter deleter) : view_(view), owner_(view.data, deleter) {}

  const TensorView& view() const { return view_; }
  float* f32() const { return view_.f32(); }
  int64_t rows() const { return view_.rows; }
  int64_t cols() const { return view_.cols; }

 private:
  TensorView view_;
  std::unique_ptr<void, Deleter> owner_{nullptr, +[](void*) {}};
};

// One layer's paged KV cache. K is [num_blocks * block_size, num_k_heads * head_dim] and V
// [num_blocks * block_size, num_v_heads * head_dim]: the row of token slot
// `block_id * block_size + offset`. Both are F32 or both BF16 (written rounded to nearest even,
// read back into F32 arithmetic). A folded layer (attention plans) may store fewer K heads than V
// heads, or none: a layer without K has num_k_heads == 0 and an empty k view.
struct KvCacheLayer {
  TensorView k;
  TensorView v;
  int32_t block_size = 0;
  int32_t num_k_heads = 0;
  int32_t num_v_heads = 0;
  int32_t head_dim = 0;
};

// Where each sequence of a batch lives in the paged KV cache.
struct AttentionBatch {
  absl::Span<const int32_t> query_start;  // num_seqs + 1; query rows of sequence s
  // Tokens of sequence s in the cache once this step's K/V are written. Query row j of sequence s
  // sits at position context_len[s] - q_len[s] + j and attends to positions [0, that position].
  absl::Span<const int32_t> context_len;
  absl::Span<const int32_t> block_tables;  // num_seqs x max_blocks_per_seq, row-major
  int32_t max_blocks_per_seq = 0;
  absl::Span<const int64_t> slot_mapping;  // per query row: the cache slot its K/V go to

  int32_t num_seqs() const { return static_cast<int32_t>(context_len.size()); }
};

// Which heads each output head of a paged-attention call combines. Per output head h: the query
// (score) head score_head[h] whose vector makes the scores, the head k_head[h] of the K layer they
// are taken against, and the head v_head[h] of the V layer whose values P mixes. Each span is
// empty (the checkpoint's GQA: score h, K and V head h / group of their layer), num_heads long
// (one map for every sequence) or num_seqs * num_heads long (row s for sequence s: CHAI cluster
// membership is per sequence). Modes: full = all empty; share = K of the source layer, V of this
// one, score/k heads through the alignment permutation; cluster = score and K head of the
// cluster's representative (K cache compacted to the representatives), V head of h; kv_from =
// both layers the source, GQA maps.
struct AttentionHeadMap {
  absl::Span<const int32_t> score_head;
  absl::Span<const int32_t> k_head;
  absl::Span<const int32_t> v_head;
};

// A step workspace of attention probabilities, so a `share` layer applies its source layer's P to
// its own V without recomputing QKᵀ. p is F32 [num_rows * num_score_heads, max_context] on the
// backend's device: row r * num_score_heads + sh holds query row r's probabilities for score head
// sh over positions [0, that row's position] (later columns are not touched). max_context bounds
// every context_len of the batch. One score head must use one K head per sequence when writing.
struct AttentionProbs {
  enum class Mode : uint8_t { kWrite, kRead };
  TensorView p;
  Mode mode = Mode::kWrite;
};

// RoPE angles per position: cos in columns [0, head_dim/2), sin in [head_dim/2, head_dim).
// Rotation follows the Hugging Face (rotate-half) layout: dims i and i + head_dim/2 form a pair.
struct RopeTable {
  TensorView cos_sin;  // [max_positions, head_dim], F32
};

// A host array as Ops::StageStepInputs takes it.
struct HostArray {
  const void* data = nullptr;
  size_t bytes = 0;
  template <typename T>
  static HostArray Of(absl::Span<const T> values) {
    return {values.data(), values.size() * sizeof(T)};
  }
};

class Ops {
 public:
  virtual ~Ops() = default;
  virtual Device device() const = 0;
  virtual std::string_view name() const = 0;

  // A zero-initialised activation buffer on this backend's device. CHECK-fails when the device
  // is out of memory.
  virtual Tensor Allocate(DType dtype, int64_t rows, int64_t cols) = 0;
  // The same, for allocations that may not fit (weights, the KV pool): out of device memory is
  // RESOURCE_EXHAUSTED naming the bytes wanted and free, and the backend stays usable.
  virtual absl::StatusOr<Tensor> TryAllocate(DType dtype, int64_t rows, int64_t cols) {
    return Allocate(dtype, rows, cols);
  }
  // Copies host bytes into `dst` (same shape and dtype), and back.
  virtual void CopyFromHost(const void* src, TensorView dst) = 0;
  virtual void CopyToHost(const TensorView& src, void* dst) = 0;

  // out[i] = table[token_ids[i]] (table in any weight dtype, quantized rows dequantized; out F32).
  virtual void Embedding(absl::Span<const int32_t> token_ids, const TensorView& table,
                         TensorView out) = 0;
  // out[i] = x[i] / sqrt(mean(x[i]^2) + eps) * weight. `out` may alias `x`.
  virtual void RmsNorm(const TensorView& x, const TensorView& weight, float eps,
                       TensorView out) = 0;
  // out = x · wᵀ (+ bias): x [n, k] F32, w [m, k] any weight dtype, bias [1, m] F32 or null.
  virtual void MatMul(const TensorView& x, const TensorView& w, const TensorView* bias,
                      TensorView out) = 0;
  // Rotates each head of x [n, num_heads * head_dim] in place by its token's position.
  virtual void Rope(TensorView x, int num_heads, int head_dim, absl::Span<const int32_t> positions,
                    const RopeTable& table) = 0;
  // Writes row i of k and v (F32) to cache slot batch.slot_mapping[i], converting to the cache's
  // dtype. k is [n, cache.num_k_heads * head_dim] (already compacted to the heads the layer
  // stores) and v is [n, cache.num_v_heads * head_dim]; a layer without K (num_k_heads == 0)
  // ignores k, which may be an empty view. A negative slot writes nothing: the padding rows of a
  // step graph's batch (below) store no K/V.
  virtual void WriteKv(const TensorView& k, const TensorView& v, const AttentionBatch& batch,
                       const KvCacheLayer& cache) = 0;
  // Rope(q, num_q_heads), Rope(k, cache.num_k_heads) and WriteKv(k, v) in one call, with the same
  // bits: q and k are rotated in place (k stays rotated for the caller) and the rotated k and v
  // are written to the cache. A layer without K (cache.num_k_heads == 0) rotates only q. The
  // default makes the three calls; a backend may fuse them (CUDA: one kernel).
  virtual void RopeWriteKv(TensorView q, int num_q_heads, TensorView k, const TensorView& v,
                           int head_dim, absl::Span<const int32_t> positions,
                           const RopeTable& table, const AttentionBatch& batch,
                           const KvCacheLayer& cache);
  // The paged-attention kernel family (attention plans: ../shared/ATTENTION.md). For each query
  // row and output head h of sequence s, with (sh, kh, vh) = heads' entries for (s, h):
  //   P = softmax(scale * q[row, head sh] · K_k_layer[head kh]ᵀ) over positions [0, row's position]
  //   out[row, head h] = P · V_v_layer[head vh]
  // K comes from k_layer's cache and V from v_layer's (they may be the same layer), through the
  // same block tables. q has any number of heads (score heads); out is [n, num_heads * head_dim]
  // and must not overlap q. Output heads of one sequence with the same (sh, kh) share one P:
  // scores and softmax run once per such group ("one P, many V").
  // With `probs` in kWrite mode, every P computed is also stored there; in kRead mode P is read
  // from there instead (q and k_layer's K are not read; q may be an empty view), giving the same
  // bits as recomputing it: both backends normalise P = exp(s - max) / Σ exp before it meets V,
  // so stored and recomputed P feed the same arithmetic.
  // The CUDA backend's order (kernels/cuda/attention_order.cuh), the same in its split-K decode
  // and tiled prefill kernels: positions fall into partitions of 256; each score is a 32-lane
  // fused-multiply-add dot summed in a fixed butterfly; per partition m_p = max s and
  // l_p = Σ exp(s - m_p) in position order; m = max m_p, l = Σ_p l_p · exp(m_p - m) in partition
  // order; P = exp(s - m) · (1 / l); out = Σ_p (position-ordered Σ P·v over partition p), in
  // partition order. Nothing depends on the batch or on which kernel served the row.
  virtual void FoldedPagedAttention(const TensorView& q, const KvCacheLayer& k_layer,
                                    const KvCacheLayer& v_layer, const AttentionHeadMap& heads,
                                    const AttentionBatch& batch, int num_heads, float scale,
                                    TensorView out, const AttentionProbs* probs = nullptr) = 0;
  // Standard causal attention of q [n, num_heads * head_dim] over one layer's cache (GQA/MQA:
  // num_heads a multiple of the cache's head counts); out has q's shape.
  void PagedAttention(const TensorView& q, const KvCacheLayer& cache, const AttentionBatch& batch,
                      int num_heads, float scale, TensorView out) {
    FoldedPagedAttention(q, cache, cache, AttentionHeadMap{}, batch, num_heads, scale, out);
  }
  // out = silu(gate) * up, elementwise. `out` may alias `gate`.
  virtual void SiluMul(const TensorView& gate, const TensorView& up, TensorView out) = 0;
  // x += y, elementwise.
  virtual void Add(TensorView x, const TensorView& y) = 0;
  // out[i] = x[rows[i]].
  virtual void GatherRows(const TensorView& x, absl::Span<const int32_t> rows, TensorView out) = 0;

  // --- Step staging and step graphs (CUDA; the CPU backend stages nothing and has no graphs). ---
  // A step's ops read small host arrays (token ids, positions, block tables, slot mapping). Staged,
  // they reach the device in one transfer per step instead of one per op call, and a recorded
  // step (a CUDA graph) can be replayed with the next step's values at the same device addresses.
  //
  // Copies `arrays` (and, when non-null, `attention`'s block tables and slot mapping plus each
  // query row's sequence and position) to device memory in one transfer. Until EndStep, an op
  // given one of these spans (the same address and length) reads that copy instead of uploading
  // the span. `region` >= 0 stages into the fixed device memory of step graph `region` (what its
  // capture reads and every replay rereads); kEagerRegion into memory shared by eager steps. The
  // caller keeps the arrays alive and unchanged until EndStep.
  static constexpr int64_t kEagerRegion = -1;
  virtual void StageStepInputs(absl::Span<const HostArray> arrays, const AttentionBatch* attention,
                               int64_t region) {}
  virtual void EndStep() {}
  // Whether BeginStepCapture works here.
  virtual bool SupportsStepGraphs() const { return false; }
  // Op calls between BeginStepCapture and EndStepCapture are recorded as graph `key` (replacing
  // one of that key) instead of run. While recording, ops may read only spans staged into region
  // `key` and constant arrays the backend has already seen in an eager step (attention head
  // groups): stage, run the same shapes once eagerly, then capture. Nothing may be copied to or
  // from the host.
  virtual absl::Status BeginStepCapture(int64_t key) { return NoStepGraphs(); }
  virtual absl::Status EndStepCapture(int64_t key) { return NoStepGraphs(); }
  virtual bool HasStepGraph(int64_t key) const { return false; }
  // Runs graph `key` on the values last staged into region `key`.
  virtual absl::Status ReplayStepGraph(int64_t key) { return NoStepGraphs(); }
  // Forgets every graph. A graph keeps reading and writing the device memory it was captured with
  // (activations, KV cache, weights): a caller about to reallocate any of it drops the graphs
  // first (the backend drops them itself when its own scratch grows). Keys are >= 0.
  virtual void DropStepGraphs() {}

 private:
  absl::Status NoStepGraphs() const {
    return absl::UnimplementedError(std::string(name()) + " ops have no step graphs");
  }
};

}  // namespace kvfold
