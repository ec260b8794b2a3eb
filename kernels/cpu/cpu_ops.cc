#include "kernels/cpu/cpu_ops.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "kernels/attention_heads.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/numerics.h"
#include "kernels/cpu/paged_attention.h"
#include "kernels/cpu/quant.h"
#include "kernels/cpu/thread_pool.h"

namespace kvfold {
namespace {

// Below this many multiply-adds an op runs on the calling thread: waking the pool costs more
// than it saves (a decode step of a tiny model is all such ops).
constexpr int64_t kMinParallelWork = 1 << 16;

void CheckSameShape(const TensorView& a, const TensorView& b) {
  CHECK(a.rows == b.rows && a.cols == b.cols) << "shape mismatch: [" << a.rows << ", " << a.cols
                                              << "] vs [" << b.rows << ", " << b.cols << "]";
}

class CpuOps final : public Ops {
 public:
  CpuOps(int num_threads, cpu::Isa isa)
      : pool_(num_threads),
        matmul_rows_(cpu::MatMulRowsFor(isa)),
        qmatmul_rows_(cpu::QMatMulRowsFor(isa)),
        attend_tasks_(cpu::AttendTasksFor(isa)) {
    VLOG(1) << "CPU backend: " << pool_.num_threads() << " threads, ISA " << cpu::IsaName(isa);
  }

  Device device() const override { return Device::kCpu; }
  std::string_view name() const override { return "cpu"; }

  Tensor Allocate(DType dtype, int64_t rows, int64_t cols) override {
    CHECK_GE(rows, 0);
    CHECK_GE(cols, 0);
    TensorView view{nullptr, dtype, rows, cols};
    // aligned_alloc needs a size that is a multiple of the alignment.
    const size_t bytes = std::max<size_t>(64, (view.nbytes() + 63) / 64 * 64);
    view.data = std::aligned_alloc(64, bytes);
    CHECK(view.data != nullptr) << "out of memory allocating " << bytes << " bytes";
    std::memset(view.data, 0, bytes);
    return Tensor(
        view, +[](void* p) { std::free(p); });
  }

  void CopyFromHost(const void* src, TensorView dst) override {
    std::memcpy(dst.data, src, dst.nbytes());
  }
  void CopyToHost(const TensorView& src, void* dst) override {
    std::memcpy(dst, src.data, src.nbytes());
  }

  void Embedding(absl::Span<const int32_t> token_ids, const TensorView& table,
                 TensorView out) override {
    CHECK_EQ(out.rows, static_cast<int64_t>(token_ids.size()));
    CHECK_EQ(out.cols, table.cols);
    CHECK(out.dtype == DType::kF32) << "Embedding out must be F32";
    const size_t row_bytes = table.row_bytes();
    for (size_t i = 0; i < token_ids.size(); ++i) {
      const int64_t id = token_ids[i];
      CHECK(id >= 0 && id < table.rows) << "token id " << id << " out of range";
      cpu::DequantizeRow(static_cast<const char*>(table.data) + id * row_bytes, table.dtype,
                         table.cols, out.f32() + static_cast<int64_t>(i) * out.cols);
    }
  }

  void RmsNorm(const TensorView& x, const TensorView& weight, float eps, TensorView out) override {
    CheckSameShape(x, out);
    CHECK_EQ(weight.numel(), x.cols);
    const int64_t n = x.cols;
    Parallel(x.rows, 2 * n, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const float* xr = x.f32() + r * n;
        float* o = out.f32() + r * n;
        const float inv = 1.0f / std::sqrt(cpu::SumSquares(xr, n) / static_cast<float>(n) + eps);
        for (int64_t c = 0; c < n; ++c) o[c] = weight.f32()[c] * (xr[c] * inv);
      }
    });
  }

  void MatMul(const TensorView& x, const TensorView& w, const TensorView* bias,
              TensorView out) override {
    CHECK_EQ(x.cols, w.cols) << "matmul inner dimensions differ";
    CHECK_EQ(out.rows, x.rows);
    CHECK_EQ(out.cols, w.rows);
    CHECK(x.dtype == DType::kF32 && out.dtype == DType::kF32) << "MatMul x and out must be F32";
    CHECK(ValidCols(w.dtype, w.cols))
        << "MatMul: " << DTypeName(w.dtype) << " weight with " << w.cols << " columns";
    const float* b = nullptr;
    if (bias != nullptr) {
      CHECK_EQ(bias->numel(), w.rows);
      b = bias->f32();
    }
    if (IsQuantized(w.dtype)) {                 // activations quantized once, for every thread
      thread_local cpu::Q8Activations scratch;  // reused: no allocation per call
      cpu::Q8Activations& qx = scratch;         // the workers must see this thread's copy
      cpu::QuantizeActivations(x.f32(), x.rows, x.cols, &qx);
      Parallel(w.rows, x.rows * x.cols, [&](int64_t begin, int64_t end) {
        qmatmul_rows_(qx, w.data, w.dtype, b, begin, end, out.f32(), out.cols);
      });
      return;
    }
    Parallel(w.rows, x.rows * x.cols, [&](int64_t begin, int64_t end) {
      matmul_rows_(x.f32(), x.rows, x.cols, w.data, w.dtype, b, begin, end, out.f32(), out.cols);
    });
  }

  void Rope(TensorView x, int num_heads, int head_dim, absl::Span<const int32_t> positions,
            const RopeTable& table) override {
    CHECK_EQ(x.cols, static_cast<int64_t>(num_heads) * head_dim);
    CHECK_EQ(x.rows, static_cast<int64_t>(positions.size()));
    CHECK_EQ(table.cos_sin.cols, head_dim);
    const int half = head_dim / 2;
    for (int64_t r = 0; r < x.rows; ++r) {
      CHECK(positions[r] >= 0 && positions[r] < table.cos_sin.rows)
          << "position " << positions[r] << " beyond the RoPE table";
      const float* cs = table.cos_sin.f32() + positions[r] * head_dim;
      for (int h = 0; h < num_heads; ++h) {
        float* v = x.f32() + r * x.cols + static_cast<int64_t>(h) * head_dim;
        for (int i = 0; i < half; ++i) {
          const float a = v[i], b = v[i + half];
          v[i] = a * cs[i] - b * cs[half + i];
          v[i + half] = b * cs[i] + a * cs[half + i];
        }
      }
    }
  }

  void WriteKv(const TensorView& k, const TensorView& v, const AttentionBatch& batch,
               const KvCacheLayer& cache) override {
    CheckWriteKv(k, v, batch, cache);
    const bool bf16 = cache.v.dtype == DType::kBF16;
    for (int64_t r = 0; r < v.rows; ++r) {
      const int64_t slot = batch.slot_mapping[r];
      if (slot < 0) continue;  // a padding row stores nothing
      if (cache.num_k_heads > 0) StoreCacheRow(k.f32() + r * k.cols, cache.k, slot, bf16);
      StoreCacheRow(v.f32() + r * v.cols, cache.v, slot, bf16);
    }
  }

  void FoldedPagedAttention(const TensorView& q, const KvCacheLayer& k_layer,
                            const KvCacheLayer& v_layer, const AttentionHeadMap& heads,
                            const AttentionBatch& batch, int num_heads, float scale, TensorView out,
                            const AttentionProbs* probs) override {
    const AttentionHeadGroups groups =
        PrepareFoldedAttention(q, k_layer, v_layer, heads, batch, num_heads, out, probs);
    const std::vector<int64_t> tasks = cpu::AttentionTasks(batch, groups);
    if (tasks.empty()) return;
    // Multiply-adds per task, on average: QKᵀ once per group, PV once per output head.
    int64_t work = 0;
    for (int32_t s = 0; s < batch.num_seqs(); ++s) {
      const int64_t per_position =
          (groups.reads_k ? groups.num_groups[groups.MapRow(s)] : 0) + num_heads;
      work += static_cast<int64_t>(batch.query_start[s + 1] - batch.query_start[s]) *
              batch.context_len[s] * per_position;
    }
    const auto num_tasks = static_cast<int64_t>(tasks.size());
    work = work * v_layer.head_dim / num_tasks;
    const cpu::FoldedAttentionArgs args{q,     &k_layer, &v_layer, &batch, &groups,
                                        probs, scale,    out,      tasks};
    Parallel(num_tasks, work, [&](int64_t begin, int64_t end) { attend_tasks_(args, begin, end); });
  }

  void SiluMul(const TensorView& gate, const TensorView& up, TensorView out) override {
    CheckSameShape(gate, up);
    CheckSameShape(gate, out);
    const float* g = gate.f32();
    const float* u = up.f32();
    float* o = out.f32();
    for (int64_t i = 0; i < gate.numel(); ++i) o[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
  }

  void Add(TensorView x, const TensorView& y) override {
    CheckSameShape(x, y);
    for (int64_t i = 0; i < x.numel(); ++i) x.f32()[i] += y.f32()[i];
  }

  void GatherRows(const TensorView& x, absl::Span<const int32_t> rows, TensorView out) override {
    CHECK_EQ(out.rows, static_cast<int64_t>(rows.size()));
    CHECK_EQ(out.cols, x.cols);
    for (size_t i = 0; i < rows.size(); ++i) {
      CHECK(rows[i] >= 0 && rows[i] < x.rows) << "row " << rows[i] << " out of range";
      std::memcpy(out.f32() + i * out.cols, x.f32() + rows[i] * x.cols, x.cols * sizeof(float));
    }
  }

 private:
  // Runs fn over [0, n) on the pool when n items of `work_per_item` each are worth it.
  template <typename Fn>
  void Parallel(int64_t n, int64_t work_per_item, Fn&& fn) {
    if (n * work_per_item < kMinParallelWork || pool_.num_threads() == 1) {
      fn(int64_t{0}, n);
    } else {
      pool_.ParallelFor(n, fn);
    }
  }

  // Row `slot` of a cache array (F32, or BF16 rounded to nearest even) = src.
  static void StoreCacheRow(const float* src, const TensorView& dst, int64_t slot, bool bf16) {
    const int64_t cols = dst.cols;
    if (bf16) {
      uint16_t* row = static_cast<uint16_t*>(dst.data) + slot * cols;
      for (int64_t c = 0; c < cols; ++c) row[c] = cpu::F32ToBf16(src[c]);
    } else {
      std::memcpy(dst.f32() + slot * cols, src, cols * sizeof(float));
    }
  }

  ThreadPool pool_;
  const cpu::MatMulRowsFn matmul_rows_;
  const cpu::QMatMulRowsFn qmatmul_rows_;
  const cpu::AttendTasksFn attend_tasks_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Ops>> CreateCpuOps(int num_threads) {
  absl::StatusOr<cpu::Isa> isa = cpu::IsaFromEnv();
  if (!isa.ok()) return isa.status();
  return NewCpuOps(num_threads, *isa);
}

std::unique_ptr<Ops> NewCpuOps(int num_threads, cpu::Isa isa) {
  return std::make_unique<CpuOps>(num_threads, isa);
}

std::unique_ptr<Ops> NewCpuOps(int num_threads) {
  absl::StatusOr<std::unique_ptr<Ops>> ops = CreateCpuOps(num_threads);
  CHECK(ops.ok()) << ops.status().message();
  return *std::move(ops);
}

}  // namespace kvfold
