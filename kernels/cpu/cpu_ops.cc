#include "kernels/cpu/cpu_ops.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>

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

// K and V: same shape, both F32 or both BF16, rows of num_k_heads * head_dim.
void CheckCache(const KvCacheLayer& cache) {
  CheckSameShape(cache.k, cache.v);
  CHECK(cache.k.dtype == cache.v.dtype) << "K and V caches differ in dtype";
  CHECK(cache.k.dtype == DType::kF32 || cache.k.dtype == DType::kBF16)
      << "KV cache dtype " << DTypeName(cache.k.dtype) << " is not F32 or BF16";
  CHECK_EQ(cache.num_k_heads, cache.num_v_heads) << "folded KV layers need FoldedPagedAttention";
  CHECK_EQ(cache.k.cols, static_cast<int64_t>(cache.num_k_heads) * cache.head_dim);
}

class CpuOps final : public Ops {
 public:
  CpuOps(int num_threads, cpu::Isa isa)
      : pool_(num_threads),
        matmul_rows_(cpu::MatMulRowsFor(isa)),
        qmatmul_rows_(cpu::QMatMulRowsFor(isa)) {
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
    CheckSameShape(k, v);
    CheckCache(cache);
    CHECK_EQ(k.cols, cache.k.cols);
    CHECK_EQ(static_cast<int64_t>(batch.slot_mapping.size()), k.rows);
    const int64_t cols = k.cols;
    for (int64_t r = 0; r < k.rows; ++r) {
      const int64_t slot = batch.slot_mapping[r];
      CHECK(slot >= 0 && slot < cache.k.rows) << "slot " << slot << " out of range";
      const float* k_row = k.f32() + r * cols;
      const float* v_row = v.f32() + r * cols;
      if (cache.k.dtype == DType::kBF16) {
        uint16_t* k_dst = static_cast<uint16_t*>(cache.k.data) + slot * cols;
        uint16_t* v_dst = static_cast<uint16_t*>(cache.v.data) + slot * cols;
        for (int64_t c = 0; c < cols; ++c) {
          k_dst[c] = cpu::F32ToBf16(k_row[c]);
          v_dst[c] = cpu::F32ToBf16(v_row[c]);
        }
      } else {
        std::memcpy(cache.k.f32() + slot * cols, k_row, cols * sizeof(float));
        std::memcpy(cache.v.f32() + slot * cols, v_row, cols * sizeof(float));
      }
    }
  }

  void PagedAttention(const TensorView& q, const KvCacheLayer& cache, const AttentionBatch& batch,
                      int num_heads, float scale, TensorView out) override {
    CheckSameShape(q, out);
    CheckCache(cache);
    CHECK_EQ(q.cols, static_cast<int64_t>(num_heads) * cache.head_dim);
    CHECK_EQ(num_heads % cache.num_k_heads, 0);
    CHECK_EQ(static_cast<int64_t>(batch.query_start.size()), batch.num_seqs() + 1);
    CHECK_EQ(batch.query_start.back(), q.rows);
    int64_t work = 0;
    for (int32_t s = 0; s < batch.num_seqs(); ++s) {
      work += static_cast<int64_t>(batch.query_start[s + 1] - batch.query_start[s]) *
              batch.context_len[s];
    }
    const int64_t tasks = q.rows * num_heads;
    work = work * num_heads * cache.head_dim * 2 / std::max<int64_t>(tasks, 1);
    Parallel(tasks, work, [&](int64_t begin, int64_t end) {
      cpu::AttendTasks(q, cache, batch, num_heads, scale, begin, end, out);
    });
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

  ThreadPool pool_;
  const cpu::MatMulRowsFn matmul_rows_;
  const cpu::QMatMulRowsFn qmatmul_rows_;
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
