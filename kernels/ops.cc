#include "kernels/ops.h"

namespace kvfold {

std::string_view DTypeName(DType t) {
  switch (t) {
    case DType::kF32:
      return "F32";
    case DType::kF16:
      return "F16";
    case DType::kBF16:
      return "BF16";
    case DType::kQ8_0:
      return "Q8_0";
    case DType::kQ4_0:
      return "Q4_0";
    case DType::kQ4_1:
      return "Q4_1";
  }
  return "?";
}

size_t RowBytes(DType t, int64_t cols) {
  CHECK(ValidCols(t, cols)) << DTypeName(t) << " row of " << cols << " elements (quantized rows "
                            << "need a multiple of " << kQuantBlock << ")";
  if (IsQuantized(t)) return static_cast<size_t>(cols / kQuantBlock) * BlockBytes(t);
  return static_cast<size_t>(cols) * DTypeSize(t);
}

void Ops::RopeWriteKv(TensorView q, int num_q_heads, TensorView k, const TensorView& v,
                      int head_dim, absl::Span<const int32_t> positions, const RopeTable& table,
                      const AttentionBatch& batch, const KvCacheLayer& cache) {
  Rope(q, num_q_heads, head_dim, positions, table);
  if (cache.num_k_heads > 0) Rope(k, cache.num_k_heads, head_dim, positions, table);
  WriteKv(k, v, batch, cache);
}

}  // namespace kvfold
