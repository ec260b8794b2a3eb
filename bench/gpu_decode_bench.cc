// Decode speed on a GPU beside the HBM roofline (issue 10). Built only with the CUDA backend.
//
// Models: (a) SmolLM2-135M from its GGUF (--gguf; quantized weights are dequantized to BF16 on
// upload, worker/device_weights.h), or, when the file is absent (it is 98 MB, more than travels to
// the device machine), a model of the same shape with random BF16 weights, labelled so;
// (b) a Llama-3.2-1B-shaped model (hidden 2048, 16 layers, 32 heads, 8 KV heads, intermediate
// 8192, vocab 128256, tied embeddings) with random BF16 weights made in memory. Speed does not
// depend on the weights' values.
//
// Each row: `batch` sequences decode `steps` tokens together from position 0 (every step one
// forward pass over one token per sequence; BF16 KV cache, 16-token blocks). Two timings:
//   logits=all  every row's logits copied to the host each step (today's engine step, which samples
//               on the host; the host-side argmax is not timed: tokens follow a fixed pattern);
//   logits=one  only sequence 0's logits (the forward pass with the lm_head GEMM over one row: what
//               a step with sampling on the device would cost, less that GEMM's other rows).
// Roofline: tokens/s if every step only streamed its bytes at the measured copy bandwidth:
//   batch * bandwidth / (weight bytes as stored on the device + batch * (embedding row + mean
//   context * KV bytes per token)), bandwidth = 2 * bytes / time of a 1 GiB cudaMemcpy D2D.
// Folded: the 1B shape again with every odd layer `share` (reusing the previous layer's attention
// probabilities, V stored only: 3/4 of the KV bytes), at batch 1 and 256 and at the batch that
// fills the KV memory of unfolded batch 256.
//
// Graphs: each row runs with step graphs off (eager op calls, host arrays staged once per step)
// and on (decode steps replayed as CUDA graphs, LlamaModel::set_step_graphs); logits=one steps
// are not plain decode steps (logits for one sequence only), so they always run eagerly.
//
//   kvfold_gpu_decode_bench [--gguf=PATH] [--models=smollm2,llama1b,llama1b_folded]
//                           [--batches=1,8,64,256] [--steps=128] [--graphs=off,on] [--json=PATH]
#include <cuda_runtime_api.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "kernels/cuda/cuda_ops.h"
#include "worker/attention_plan.h"
#include "worker/kv_cache.h"
#include "worker/llama_model.h"
#include "worker/lockstep_batch.h"
#include "worker/model_loader.h"

namespace kvfold {
namespace {

constexpr int32_t kBlockSize = 16;

struct Options {
  std::string gguf;
  std::vector<std::string> models = {"smollm2", "llama1b", "llama1b_folded"};
  std::vector<int> batches = {1, 8, 64, 256};
  int steps = 128;
  std::vector<bool> graphs = {false, true};
  std::string json;
};

// Random BF16 matrices and F32 ones for norms, as host views into two shared pools: every matrix
// of a shape reads the same bytes on the host, but LlamaModel uploads each into its own device
// allocation, so the device streams as many bytes as a real model's.
class RandomWeightSource final : public WeightSource {
 public:
  RandomWeightSource(ModelConfig config, std::string label)
      : config_(std::move(config)), location_("random:" + label) {
    const int64_t d = config_.hidden_size;
    const int64_t largest =
        std::max({static_cast<int64_t>(config_.vocab_size) * d,
                  static_cast<int64_t>(config_.intermediate_size) * d,
                  static_cast<int64_t>(config_.num_heads) * config_.head_dim * d});
    pool_.resize(largest);
    uint64_t state = 0x9E3779B97F4A7C15ull;
    for (uint16_t& v : pool_) {
      state ^= state << 13;
      state ^= state >> 7;
      state ^= state << 17;
      // Sign and 7 mantissa bits random, exponent 2^-7: values in ±[2^-7, 2^-6).
      v = static_cast<uint16_t>(0x3C00 | (state & 0x807F));
    }
    ones_.assign(std::max<int64_t>(d, config_.intermediate_size), 1.0f);
  }

  const ModelConfig& config() const override { return config_; }
  const std::string& location() const override { return location_; }
  absl::StatusOr<TensorView> Get(std::string_view name, int64_t rows, int64_t cols) const override {
    if (name.ends_with("norm.weight")) {
      return TensorView{const_cast<float*>(ones_.data()), DType::kF32, rows, cols};
    }
    if (rows * cols > static_cast<int64_t>(pool_.size())) {
      return absl::InternalError(absl::StrCat("random pool too small for ", std::string(name)));
    }
    return TensorView{const_cast<uint16_t*>(pool_.data()), DType::kBF16, rows, cols};
  }
  bool Has(std::string_view name) const override {
    return !name.ends_with(".bias") && name != "lm_head.weight";
  }

 private:
  ModelConfig config_;
  std::string location_;
  std::vector<uint16_t> pool_;
  std::vector<float> ones_;
};

ModelConfig LlamaShape(int hidden, int layers, int heads, int kv_heads, int intermediate, int vocab,
                       double rope_theta) {
  ModelConfig c;
  c.architecture = "LlamaForCausalLM";
  c.hidden_size = hidden;
  c.intermediate_size = intermediate;
  c.num_layers = layers;
  c.num_heads = heads;
  c.num_kv_heads = kv_heads;
  c.head_dim = hidden / heads;
  c.vocab_size = vocab;
  c.max_position_embeddings = 8192;
  c.rms_norm_eps = 1e-5;
  c.rope_theta = rope_theta;
  c.tie_word_embeddings = true;
  c.bos_token_id = 1;
  return c;
}

// Every odd layer shares the previous (full) layer's attention probabilities.
AttentionPlan ShareOddLayers(const ModelConfig& c) {
  AttentionPlan plan = FullAttentionPlan(c);
  for (int i = 1; i < c.num_layers; i += 2) {
    plan.layers[i].mode = AttentionMode::kShare;
    plan.layers[i].source = i - 1;
  }
  return plan;
}

// Bytes one decode step streams, with matrices as the CUDA backend holds them (2 bytes per
// element: BF16 or F16, quantized ones converted) and norms in F32; only the weights each layer's
// mode reads (as LlamaModel::LoadWeights loads them).
struct StepBytes {
  double weights = 0, embedding_row = 0, kv_per_token = 0;
  double PerStep(int batch, double mean_context) const {
    return weights + batch * (embedding_row + mean_context * kv_per_token);
  }
};

StepBytes DeviceStepBytes(const ModelConfig& c, const AttentionPlan& plan) {
  const double d = c.hidden_size, ffn = c.intermediate_size;
  const double q = static_cast<double>(c.num_heads) * c.head_dim;
  const double kv = static_cast<double>(c.num_kv_heads) * c.head_dim;
  StepBytes b;
  b.weights = 2.0 * c.vocab_size * d + 4.0 * d;  // lm_head (tied or not), final norm
  for (const LayerPlan& l : plan.layers) {
    double m = 3.0 * ffn * d;  // gate, up, down
    const bool reads_q = l.mode == AttentionMode::kFull || l.mode == AttentionMode::kKvFrom ||
                         l.mode == AttentionMode::kCluster;
    if (reads_q) m += q * d;
    if (l.mode == AttentionMode::kFull) m += kv * d;
    if (l.mode == AttentionMode::kCluster) m += l.clusters * c.head_dim * d;
    if (l.mode == AttentionMode::kFull || l.mode == AttentionMode::kShare ||
        l.mode == AttentionMode::kCluster) {
      m += kv * d;
    }
    if (l.mode != AttentionMode::kDrop) m += q * d;  // o_proj
    b.weights += 2.0 * m + 8.0 * d;                  // two F32 norms
  }
  b.embedding_row = 2.0 * d;
  b.kv_per_token = static_cast<double>(KvBytesPerToken(KvLayerShapes(c, plan), DType::kBF16));
  return b;
}

#define BENCH_CUDA(expr)                                                        \
  do {                                                                          \
    const cudaError_t e = (expr);                                               \
    if (e != cudaSuccess) LOG(FATAL) << #expr << ": " << cudaGetErrorString(e); \
  } while (0)

// Device-to-device copy bandwidth, bytes read plus bytes written per second.
double MeasureCopyBandwidth() {
  const size_t bytes = size_t{1} << 30;
  void *a = nullptr, *b = nullptr;
  BENCH_CUDA(cudaMalloc(&a, bytes));
  BENCH_CUDA(cudaMalloc(&b, bytes));
  BENCH_CUDA(cudaMemset(a, 1, bytes));
  cudaEvent_t start, stop;
  BENCH_CUDA(cudaEventCreate(&start));
  BENCH_CUDA(cudaEventCreate(&stop));
  for (int i = 0; i < 3; ++i) BENCH_CUDA(cudaMemcpy(b, a, bytes, cudaMemcpyDeviceToDevice));
  constexpr int kReps = 10;
  BENCH_CUDA(cudaEventRecord(start));
  for (int i = 0; i < kReps; ++i) BENCH_CUDA(cudaMemcpy(b, a, bytes, cudaMemcpyDeviceToDevice));
  BENCH_CUDA(cudaEventRecord(stop));
  BENCH_CUDA(cudaEventSynchronize(stop));
  float ms = 0;
  BENCH_CUDA(cudaEventElapsedTime(&ms, start, stop));
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  cudaFree(a);
  cudaFree(b);
  return 2.0 * static_cast<double>(bytes) * kReps / (ms * 1e-3);
}

// Seconds for `steps` decode steps of `batch` sequences from position 0.
// `cache` holds batch * BlocksPerSeq(steps) blocks; one cache per batch size, so step graphs
// (which write to the cache they were captured with) survive from the warm-up to the timed runs.
int32_t BlocksPerSeq(int steps) { return (steps + kBlockSize - 1) / kBlockSize; }
double TimeDecode(LlamaModel& model, const KvCache& cache, int batch, int steps, bool all_logits) {
  const ModelConfig& c = model.config();
  const int32_t blocks_per_seq = BlocksPerSeq(steps);
  LockstepBatch batches(blocks_per_seq, kBlockSize, batch);
  std::vector<int32_t> tokens(batch);
  std::vector<float> logits(static_cast<size_t>(all_logits ? batch : 1) * c.vocab_size);
  const int32_t zero = 0;
  const auto start = std::chrono::steady_clock::now();
  for (int32_t i = 0; i < steps; ++i) {
    for (int32_t s = 0; s < batch; ++s)
      tokens[s] = 3 + (s * 7919 + i * 104729) % (c.vocab_size - 3);
    ForwardBatch fb = batches.Append(tokens, i, LockstepBatch::Logits::kAll);
    if (!all_logits) fb.logits_rows = absl::MakeConstSpan(&zero, 1);
    const absl::Status status = model.Forward(fb, cache, logits.data());  // waits for the device
    CHECK(status.ok()) << status;
  }
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

struct Row {
  std::string model;
  std::string plan;
  bool graphs = false;
  int batch = 0;
  int steps = 0;
  double tps_all = 0, tps_one = 0, roofline = 0, bytes_per_step = 0;
};

void RunModel(const std::string& label, std::unique_ptr<WeightSource> source, AttentionPlan plan,
              const std::vector<int>& batches, int steps, const std::vector<bool>& graph_modes,
              double bandwidth, std::vector<Row>& rows) {
  const ModelConfig config = source->config();
  const bool folded = plan.folded();
  const StepBytes bytes =
      DeviceStepBytes(config, plan.layers.empty() ? FullAttentionPlan(config) : plan);
  std::unique_ptr<Ops> ops = *NewCudaOps(0);
  auto model = LlamaModel::Load(std::move(source), *ops, std::move(plan));
  CHECK(model.ok()) << model.status();
  for (const bool graphs : graph_modes) {
    StepGraphOptions options;
    options.stage_inputs = true;
    options.graphs = graphs;
    (*model)->set_step_graphs(options);
    for (const int batch : batches) {
      const KvCache cache(*ops, (*model)->kv_layer_shapes(), batch * BlocksPerSeq(steps),
                          kBlockSize, DType::kBF16);
      // Warm-up: cuBLAS, workspace, and with graphs every table width's graph, run once eagerly
      // then captured (the timed runs only replay).
      TimeDecode(**model, cache, batch, steps, true);
      TimeDecode(**model, cache, batch, steps, true);
      Row row{label, folded ? "share-odd" : "full", graphs, batch, steps};
      row.tps_all = batch * steps / TimeDecode(**model, cache, batch, steps, true);
      row.tps_one = batch * steps / TimeDecode(**model, cache, batch, steps, false);
      row.bytes_per_step = bytes.PerStep(batch, (steps + 1) / 2.0);
      row.roofline = batch * bandwidth / row.bytes_per_step;
      std::printf(
          "ROW model=%s plan=%s graphs=%s batch=%d steps=%d tok_s_all=%.1f tok_s_one=%.1f "
          "roofline_tok_s=%.1f pct_roofline_all=%.1f pct_roofline_one=%.1f bytes_per_step=%.0f\n",
          row.model.c_str(), row.plan.c_str(), graphs ? "on" : "off", batch, steps, row.tps_all,
          row.tps_one, row.roofline, 100.0 * row.tps_all / row.roofline,
          100.0 * row.tps_one / row.roofline, row.bytes_per_step);
      std::fflush(stdout);
      rows.push_back(row);
    }
  }
}

bool ParseInts(const std::string& text, std::vector<int>& out) {
  out.clear();
  for (absl::string_view part : absl::StrSplit(text, ',')) {
    int v;
    if (!absl::SimpleAtoi(part, &v) || v < 1) return false;
    out.push_back(v);
  }
  return !out.empty();
}

bool ParseFlags(int argc, char** argv, Options& o) {
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const size_t eq = arg.find('=');
    const std::string key = arg.substr(0, eq),
                      value = eq == std::string::npos ? "" : arg.substr(eq + 1);
    if (key == "--gguf") {
      o.gguf = value;
    } else if (key == "--models") {
      o.models = absl::StrSplit(value, ',');
    } else if (key == "--batches") {
      if (!ParseInts(value, o.batches)) return false;
    } else if (key == "--steps") {
      if (!absl::SimpleAtoi(value, &o.steps) || o.steps < 1) return false;
    } else if (key == "--graphs") {
      o.graphs.clear();
      for (absl::string_view mode : absl::StrSplit(value, ',')) {
        if (mode != "off" && mode != "on") return false;
        o.graphs.push_back(mode == "on");
      }
    } else if (key == "--json") {
      o.json = value;
    } else {
      return false;
    }
  }
  return true;
}

int Main(int argc, char** argv) {
  Options o;
  if (!ParseFlags(argc, argv, o)) {
    std::fprintf(stderr,
                 "usage: kvfold_gpu_decode_bench [--gguf=PATH] [--models=smollm2,llama1b,"
                 "llama1b_folded] [--batches=1,8,64,256] [--steps=128] [--graphs=off,on] "
                 "[--json=PATH]\n");
    return 2;
  }
  if (!CudaDeviceAvailable()) {
    std::printf("SKIP kvfold_gpu_decode_bench: no CUDA device\n");
    return 0;
  }
  const double bandwidth = MeasureCopyBandwidth();
  std::printf("BANDWIDTH d2d_copy_GBps=%.1f (bytes read + written)\n", bandwidth / 1e9);
  std::vector<Row> rows;
  const ModelConfig smol = LlamaShape(576, 30, 9, 3, 1536, 49152, 100000.0);
  const ModelConfig llama1b = LlamaShape(2048, 16, 32, 8, 8192, 128256, 500000.0);
  for (const std::string& name : o.models) {
    if (name == "smollm2") {
      if (!o.gguf.empty() && std::filesystem::exists(o.gguf)) {
        auto source = OpenWeights(o.gguf);
        CHECK(source.ok()) << source.status();
        RunModel("smollm2-135m-gguf", *std::move(source), {}, o.batches, o.steps, o.graphs,
                 bandwidth, rows);
      } else {
        RunModel("smollm2-135m-shape-random", std::make_unique<RandomWeightSource>(smol, "smollm2"),
                 {}, o.batches, o.steps, o.graphs, bandwidth, rows);
      }
    } else if (name == "llama1b") {
      RunModel("llama-3.2-1b-shape-random",
               std::make_unique<RandomWeightSource>(llama1b, "llama1b"), {}, o.batches, o.steps,
               o.graphs, bandwidth, rows);
    } else if (name == "llama1b_folded") {
      // Equal KV memory: the batch whose folded cache takes what unfolded batch 256 takes.
      const double ratio =
          static_cast<double>(KvBytesPerToken(KvLayerShapes(llama1b), DType::kBF16)) /
          static_cast<double>(
              KvBytesPerToken(KvLayerShapes(llama1b, ShareOddLayers(llama1b)), DType::kBF16));
      const int equal_kv_batch = static_cast<int>(256 * ratio);
      RunModel("llama-3.2-1b-shape-random",
               std::make_unique<RandomWeightSource>(llama1b, "llama1b"), ShareOddLayers(llama1b),
               {1, 256, equal_kv_batch}, o.steps, o.graphs, bandwidth, rows);
    } else {
      std::fprintf(stderr, "unknown model %s\n", name.c_str());
      return 2;
    }
  }
  if (!o.json.empty()) {
    std::ofstream out(o.json);
    out << "{\"d2d_copy_bytes_per_s\": " << bandwidth << ", \"rows\": [";
    for (size_t i = 0; i < rows.size(); ++i) {
      const Row& r = rows[i];
      out << (i ? ",\n" : "\n") << "{\"model\": \"" << r.model << "\", \"plan\": \"" << r.plan
          << "\", \"graphs\": " << (r.graphs ? "true" : "false") << ", \"batch\": " << r.batch
          << ", \"steps\": " << r.steps << ", \"tok_s_all_logits\": " << r.tps_all
          << ", \"tok_s_one_logits\": " << r.tps_one << ", \"roofline_tok_s\": " << r.roofline
          << ", \"bytes_per_step\": " << r.bytes_per_step << "}";
    }
    out << "\n]}\n";
  }
  return 0;
}

}  // namespace
}  // namespace kvfold

int main(int argc, char** argv) { return kvfold::Main(argc, argv); }
