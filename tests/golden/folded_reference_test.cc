// Every attention-plan mode against a plain double-precision reference of its formula
// (../shared/ATTENTION.md), on a tiny random Llama written by the test (6 layers, hidden 64,
// 8 query heads of 8 or 16 dims, 4 KV heads, so g = 2 query heads per KV head; vocab 97, F32,
// rope_theta 500). Per query head h, with P(q, k) = softmax(q kᵀ/√d) causal (t <= i):
//   full      O[h] = P(Q[h], K[h/g]) V[h/g]
//   share s   O[h] = P_s[align[h]] V[h/g], P_s[a] = P(Q_s[a], K_s[a/g]) of the source layer s
//   cluster   O[h] = P(Q[m(h/g)·g + h%g], K[m(h/g)]) V[h/g], m the static map (KV head -> rep)
//   drop      the attention sublayer is skipped (its bias added when the plan has one)
//   kv_from j O[h] = P(Q[h], K_j[h/g]) V_j[h/g], with layer j's K and V
// The reference never calls our kernels or LlamaModel. LlamaModel (F32 KV cache) must match it
// within 1e-4 of the logit scale (F32 against double: the errors seen are ~1e-6 of it) for a
// whole-prompt prefill, chunked prefills and prefill + decode; the unfolded model is far outside
// that tolerance, and so is the reference with any folded layer's head map changed. Through the
// Engine (small pool: preemption; small token budget: chunked prefill; shared prefixes:
// prefix-cache hits) every request's greedy tokens equal its run alone and are the reference's
// greedy continuation, and every step's log-probabilities match the reference's. A prefill too
// long for LlamaModel to keep its probabilities checks share layers that recompute them.
// CHAI membership: kvfold uses the plan's static map for every sequence (ATTENTION.md's simpler
// variant; per-sequence membership from the first `window` tokens is not implemented). What must
// hold is that a clustered layer uses the same head map at every step of a sequence's life, which
// the per-step checks (prefill, decode, recompute after preemption) establish.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/cpu_ops.h"
#include "scheduler/engine.h"
#include "tests/testing/safetensors_writer.h"
#include "worker/attention_plan.h"
#include "worker/kv_cache.h"
#include "worker/llama_model.h"
#include "worker/model_executor.h"
#include "worker/model_loader.h"
#include "worker/sampler.h"
#include "worker/sequence_runner.h"

namespace kvfold {
namespace {

constexpr int kLayers = 6, kHidden = 64, kHeads = 8, kKvHeads = 4, kFfn = 128;
constexpr int kVocab = 97, kMaxPositions = 2048;
constexpr int kGroup = kHeads / kKvHeads;
constexpr double kTheta = 500.0;  // not the default 10000: a reference ignoring it fails
constexpr double kEps = 1e-5;
// Allowed |ours - reference| per logit, as a fraction of the sequence's largest |logit|.
constexpr double kRelativeTolerance = 1e-4;

// ---------------------------------------------------------------------------------------------
// The tiny model.

using Weights = std::map<std::string, std::vector<double>>;  // HF names, [out, in] row-major

// Head dims 8 and 16 take different kernel paths (scalar and vector dot products and mixes).
struct TinyModel {
  int head_dim = 8;
  Weights w;
};

std::string LayerName(int l, const std::string& leaf) {
  return "model.layers." + std::to_string(l) + "." + leaf;
}

// Random weights scaled so that scores have a spread of a few units (attention far from uniform)
// and the residual stream stays O(1); norm weights near 1. Written as F32 safetensors with a
// config.json into `dir`; returns the same values (as double) for the reference.
TinyModel WriteTinyModel(const std::string& dir, int head_dim, uint32_t seed = 2026) {
  std::mt19937 rng(seed);
  TinyModel m{head_dim, {}};
  Weights& w = m.w;
  std::vector<testing::TensorSpec> specs;
  auto add = [&](const std::string& name, int64_t rows, int64_t cols, double stddev, double mean) {
    std::normal_distribution<float> dist(0.0f, 1.0f);
    std::vector<float> values(rows * cols);
    for (float& v : values) v = static_cast<float>(mean + stddev * dist(rng));
    w[name].assign(values.begin(), values.end());
    std::vector<int64_t> shape = {rows, cols};
    if (rows == 1) shape = {cols};
    specs.push_back({name, "F32", shape, testing::F32Bytes(values)});
  };
  add("model.embed_tokens.weight", kVocab, kHidden, 1.0, 0.0);
  for (int l = 0; l < kLayers; ++l) {
    add(LayerName(l, "input_layernorm.weight"), 1, kHidden, 0.1, 1.0);
    add(LayerName(l, "self_attn.q_proj.weight"), kHeads * head_dim, kHidden, 0.2, 0.0);
    add(LayerName(l, "self_attn.k_proj.weight"), kKvHeads * head_dim, kHidden, 0.2, 0.0);
    add(LayerName(l, "self_attn.v_proj.weight"), kKvHeads * head_dim, kHidden, 0.3, 0.0);
    add(LayerName(l, "self_attn.o_proj.weight"), kHidden, kHeads * head_dim, 0.15, 0.0);
    add(LayerName(l, "post_attention_layernorm.weight"), 1, kHidden, 0.1, 1.0);
    add(LayerName(l, "mlp.gate_proj.weight"), kFfn, kHidden, 0.125, 0.0);
    add(LayerName(l, "mlp.up_proj.weight"), kFfn, kHidden, 0.125, 0.0);
    add(LayerName(l, "mlp.down_proj.weight"), kHidden, kFfn, 0.09, 0.0);
  }
  add("model.norm.weight", 1, kHidden, 0.1, 1.0);
  add("lm_head.weight", kVocab, kHidden, 0.3, 0.0);
  std::filesystem::create_directories(dir);
  testing::WriteFile(dir + "/model.safetensors", testing::SafetensorsBytes(specs));
  const nlohmann::json config = {{"architectures", {"LlamaForCausalLM"}},
                                 {"model_type", "llama"},
                                 {"hidden_size", kHidden},
                                 {"intermediate_size", kFfn},
                                 {"num_hidden_layers", kLayers},
                                 {"num_attention_heads", kHeads},
                                 {"num_key_value_heads", kKvHeads},
                                 {"head_dim", head_dim},
                                 {"vocab_size", kVocab},
                                 {"max_position_embeddings", kMaxPositions},
                                 {"rms_norm_eps", kEps},
                                 {"rope_theta", kTheta},
                                 {"hidden_act", "silu"},
                                 {"tie_word_embeddings", false},
                                 {"bos_token_id", 1},
                                 {"eos_token_id", 2},
                                 {"torch_dtype", "float32"}};
  testing::WriteFile(dir + "/config.json", config.dump(2));
  return m;
}

// ---------------------------------------------------------------------------------------------
// Plans, as the test states them (the reference reads these, never an AttentionPlan).

struct RefLayer {
  AttentionMode mode = AttentionMode::kFull;
  int from = -1;                // share, kv_from
  std::vector<int> align;       // share: source query head feeding head h; empty = identity
  std::vector<int> static_map;  // cluster: per KV head, its cluster's representative
  std::vector<float> bias;      // drop: added in place of the attention output; empty = none
};
using RefPlan = std::vector<RefLayer>;

RefLayer Full() { return {}; }
RefLayer Share(int from, std::vector<int> align = {}) {
  return {.mode = AttentionMode::kShare, .from = from, .align = std::move(align)};
}
RefLayer Cluster(std::vector<int> static_map) {
  return {.mode = AttentionMode::kCluster, .static_map = std::move(static_map)};
}
RefLayer Drop(std::vector<float> bias = {}) {
  return {.mode = AttentionMode::kDrop, .bias = std::move(bias)};
}
RefLayer KvFrom(int from) { return {.mode = AttentionMode::kKvFrom, .from = from}; }

std::vector<float> RandomBias(uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, 0.5f);
  std::vector<float> b(kHidden);
  for (float& x : b) x = dist(rng);
  return b;
}

std::string JsonInts(const std::vector<int>& v) { return nlohmann::json(v).dump(); }

// The plan file for `plan` (bias tensors in a safetensors file beside it); returns its path.
std::string WritePlan(const std::string& dir, const std::string& model_dir, const RefPlan& plan) {
  absl::StatusOr<std::unique_ptr<WeightSource>> w = OpenWeights(model_dir);
  EXPECT_TRUE(w.ok()) << w.status();
  const absl::StatusOr<std::string> fingerprint = ModelFingerprint((*w)->config(), **w);
  EXPECT_TRUE(fingerprint.ok()) << fingerprint.status();
  std::string layers;
  std::vector<testing::TensorSpec> biases;
  for (size_t l = 0; l < plan.size(); ++l) {
    const RefLayer& p = plan[l];
    std::string j = "{\"mode\": \"" + std::string(AttentionModeName(p.mode)) + "\"";
    if (p.mode == AttentionMode::kShare || p.mode == AttentionMode::kKvFrom) {
      j += ", \"from\": " + std::to_string(p.from);
    }
    if (!p.align.empty()) j += ", \"align\": " + JsonInts(p.align);
    if (p.mode == AttentionMode::kCluster) {
      const std::set<int> reps(p.static_map.begin(), p.static_map.end());
      j += ", \"clusters\": " + std::to_string(reps.size()) +
           ", \"static_map\": " + JsonInts(p.static_map);
    }
    if (!p.bias.empty()) {
      const std::string tensor = "beta." + std::to_string(l);
      biases.push_back({tensor, "F32", {kHidden}, testing::F32Bytes(p.bias)});
      j += ", \"bias\": \"bias.safetensors:" + tensor + "\"";
    }
    layers += (l ? ", " : "") + j + "}";
  }
  if (!biases.empty()) {
    testing::WriteFile(dir + "/bias.safetensors", testing::SafetensorsBytes(biases));
  }
  const std::string path = dir + "/plan.json";
  testing::WriteFile(path, "{\"version\": 1, \"model_fingerprint\": \"" + *fingerprint +
                               "\", \"layers\": [" + layers + "]}");
  return path;
}

absl::StatusOr<std::unique_ptr<LlamaModel>> LoadModel(const std::string& model_dir, Ops& ops,
                                                      const std::string& plan_path = "") {
  absl::StatusOr<std::unique_ptr<WeightSource>> w = OpenWeights(model_dir);
  if (!w.ok()) return w.status();
  AttentionPlan plan;
  if (!plan_path.empty()) {
    absl::StatusOr<std::string> fp = ModelFingerprint((*w)->config(), **w);
    if (!fp.ok()) return fp.status();
    absl::StatusOr<AttentionPlan> loaded = LoadAttentionPlan(plan_path, (*w)->config(), *fp);
    if (!loaded.ok()) return loaded.status();
    plan = *std::move(loaded);
  }
  return LlamaModel::Load(*std::move(w), ops, std::move(plan));
}

// ---------------------------------------------------------------------------------------------
// The reference: the whole sequence at once, causal, in double.

using Matrix = std::vector<std::vector<double>>;  // [token][feature]

// a [T, in] times wᵀ, w [out, in] row-major.
Matrix Linear(const Matrix& a, const std::vector<double>& w, int out) {
  const size_t in = a.empty() ? 0 : a[0].size();
  Matrix y(a.size(), std::vector<double>(out, 0.0));
  for (size_t t = 0; t < a.size(); ++t) {
    for (int o = 0; o < out; ++o) {
      double s = 0;
      for (size_t i = 0; i < in; ++i) s += a[t][i] * w[o * in + i];
      y[t][o] = s;
    }
  }
  return y;
}

Matrix RmsNorm(const Matrix& x, const std::vector<double>& weight) {
  Matrix y = x;
  for (auto& row : y) {
    double ss = 0;
    for (double v : row) ss += v * v;
    const double inv = 1.0 / std::sqrt(ss / row.size() + kEps);
    for (size_t i = 0; i < row.size(); ++i) row[i] *= inv * weight[i];
  }
  return y;
}

// Rotate-half RoPE of every head of x (position = row index).
void Rope(Matrix& x, int heads, int d) {
  const int half = d / 2;
  for (size_t t = 0; t < x.size(); ++t) {
    for (int h = 0; h < heads; ++h) {
      double* v = &x[t][h * d];
      for (int i = 0; i < half; ++i) {
        const double angle = t * std::pow(kTheta, -2.0 * i / d);
        const double a = v[i], b = v[i + half];
        v[i] = a * std::cos(angle) - b * std::sin(angle);
        v[i + half] = b * std::cos(angle) + a * std::sin(angle);
      }
    }
  }
}

// out[:, h] = P · v[:, vh] with P = softmax(q[:, qh] · k[:, kh]ᵀ / √d) over positions t <= i
// (causal), one query row i at a time.
void Attend(int d, const Matrix& q, int qh, const Matrix& k, int kh, const Matrix& v, int vh, int h,
            Matrix& out) {
  std::vector<double> p(q.size());
  for (size_t i = 0; i < q.size(); ++i) {
    double max = -1e300;
    for (size_t t = 0; t <= i; ++t) {
      double s = 0;
      for (int e = 0; e < d; ++e) s += q[i][qh * d + e] * k[t][kh * d + e];
      p[t] = s / std::sqrt(static_cast<double>(d));
      max = std::max(max, p[t]);
    }
    double sum = 0;
    for (size_t t = 0; t <= i; ++t) sum += (p[t] = std::exp(p[t] - max));
    for (int e = 0; e < d; ++e) {
      double o = 0;
      for (size_t t = 0; t <= i; ++t) o += p[t] * v[t][vh * d + e];
      out[i][h * d + e] = o / sum;
    }
  }
}

// Logits of every position of `ids`: [T][vocab].
Matrix ReferenceLogits(const TinyModel& m, const RefPlan& plan, const std::vector<int32_t>& ids) {
  const Weights& w = m.w;
  const int d = m.head_dim;
  const size_t n = ids.size();
  auto W = [&](int l, const char* leaf) -> const std::vector<double>& {
    return w.at(LayerName(l, leaf));
  };
  Matrix x(n);
  for (size_t t = 0; t < n; ++t) {
    const auto& e = w.at("model.embed_tokens.weight");
    x[t].assign(e.begin() + ids[t] * kHidden, e.begin() + (ids[t] + 1) * kHidden);
  }
  std::vector<Matrix> queries(kLayers), keys(kLayers), values(kLayers);  // after RoPE
  for (int l = 0; l < kLayers; ++l) {
    const RefLayer& p = plan[l];
    if (p.mode == AttentionMode::kDrop) {
      for (auto& row : x) {
        for (size_t i = 0; i < p.bias.size(); ++i) row[i] += p.bias[i];
      }
    } else {
      const Matrix h = RmsNorm(x, W(l, "input_layernorm.weight"));
      Matrix& q = queries[l] = Linear(h, W(l, "self_attn.q_proj.weight"), kHeads * d);
      Rope(q, kHeads, d);
      keys[l] = Linear(h, W(l, "self_attn.k_proj.weight"), kKvHeads * d);
      Rope(keys[l], kKvHeads, d);
      values[l] = Linear(h, W(l, "self_attn.v_proj.weight"), kKvHeads * d);
      Matrix attn(n, std::vector<double>(kHeads * d));
      for (int hq = 0; hq < kHeads; ++hq) {
        const int g = hq / kGroup;
        switch (p.mode) {
          case AttentionMode::kFull:
            Attend(d, q, hq, keys[l], g, values[l], g, hq, attn);
            break;
          case AttentionMode::kShare: {
            // P_s of source head a: its queries over its keys, applied to this layer's V.
            const int a = p.align.empty() ? hq : p.align[hq];
            Attend(d, queries[p.from], a, keys[p.from], a / kGroup, values[l], g, hq, attn);
            break;
          }
          case AttentionMode::kCluster: {
            const int r = p.static_map[g];
            Attend(d, q, r * kGroup + hq % kGroup, keys[l], r, values[l], g, hq, attn);
            break;
          }
          case AttentionMode::kKvFrom:
            Attend(d, q, hq, keys[p.from], g, values[p.from], g, hq, attn);
            break;
          case AttentionMode::kDrop:
            break;
        }
      }
      const Matrix o = Linear(attn, W(l, "self_attn.o_proj.weight"), kHidden);
      for (size_t t = 0; t < n; ++t) {
        for (int i = 0; i < kHidden; ++i) x[t][i] += o[t][i];
      }
    }
    const Matrix h = RmsNorm(x, W(l, "post_attention_layernorm.weight"));
    Matrix gate = Linear(h, W(l, "mlp.gate_proj.weight"), kFfn);
    const Matrix up = Linear(h, W(l, "mlp.up_proj.weight"), kFfn);
    for (size_t t = 0; t < n; ++t) {
      for (int i = 0; i < kFfn; ++i) {
        const double g = gate[t][i];
        gate[t][i] = g / (1.0 + std::exp(-g)) * up[t][i];
      }
    }
    const Matrix down = Linear(gate, W(l, "mlp.down_proj.weight"), kHidden);
    for (size_t t = 0; t < n; ++t) {
      for (int i = 0; i < kHidden; ++i) x[t][i] += down[t][i];
    }
  }
  return Linear(RmsNorm(x, w.at("model.norm.weight")), w.at("lm_head.weight"), kVocab);
}

double MaxAbs(const Matrix& m) {
  double worst = 0;
  for (const auto& row : m) {
    for (double v : row) worst = std::max(worst, std::abs(v));
  }
  return worst;
}

// Largest |ours - reference| over positions [first, first + rows) of the reference; `ours` is
// [rows x vocab] row-major.
double MaxDiff(const std::vector<float>& ours, const Matrix& ref, size_t first = 0) {
  double worst = 0;
  const size_t rows = ours.size() / kVocab;
  for (size_t r = 0; r < rows; ++r) {
    for (int v = 0; v < kVocab; ++v) {
      worst = std::max(worst, std::abs(ours[r * kVocab + v] - ref[first + r][v]));
    }
  }
  return worst;
}

std::vector<double> LogSoftmax(const std::vector<double>& logits) {
  const double max = *std::max_element(logits.begin(), logits.end());
  double sum = 0;
  for (double v : logits) sum += std::exp(v - max);
  std::vector<double> out(logits.size());
  for (size_t i = 0; i < logits.size(); ++i) out[i] = logits[i] - max - std::log(sum);
  return out;
}

std::vector<int32_t> RandomTokens(std::mt19937& rng, int n) {
  std::uniform_int_distribution<int32_t> token(3, kVocab - 1);
  std::vector<int32_t> ids(n);
  for (int32_t& t : ids) t = token(rng);
  return ids;
}

// Our logits for `ids` appended in chunks of the given sizes (the last repeats), all positions.
std::vector<float> RunInChunks(LlamaModel& model, Ops& ops, const std::vector<int32_t>& ids,
                               const std::vector<int>& chunks) {
  SequenceRunner runner(model, ops, static_cast<int32_t>(ids.size()), DType::kF32);
  std::vector<float> logits;
  size_t pos = 0;
  for (size_t c = 0; pos < ids.size(); ++c) {
    const size_t len = std::min<size_t>(chunks[std::min(c, chunks.size() - 1)], ids.size() - pos);
    absl::StatusOr<std::vector<float>> out =
        runner.Append(absl::MakeConstSpan(ids).subspan(pos, len), /*all_logits=*/true);
    EXPECT_TRUE(out.ok()) << out.status();
    if (!out.ok()) return {};
    logits.insert(logits.end(), out->begin(), out->end());
    pos += len;
  }
  return logits;
}

// ---------------------------------------------------------------------------------------------
// The plans under test.

// A cross-group permutation of query heads (source head align[h] feeds head h).
const std::vector<int> kAlign = {3, 0, 5, 1, 7, 2, 6, 4};

struct PlanCase {
  std::string name;
  friend void PrintTo(const PlanCase& c, std::ostream* os) { *os << c.name; }
  RefPlan plan;
  // The same plan with a folded layer's head map changed (share: no align; cluster: another
  // valid map): the reference of these must be far from our logits too. Empty for none.
  std::vector<RefPlan> perturbed;
};

std::vector<int> Inverse(const std::vector<int>& perm) {
  std::vector<int> inv(perm.size());
  for (size_t h = 0; h < perm.size(); ++h) inv[perm[h]] = static_cast<int>(h);
  return inv;
}

std::vector<PlanCase> PlanCases() {
  const std::vector<int> map = {0, 1, 1, 0};  // clusters {0, 3} and {1, 2}
  return {
      {"AllFull", {Full(), Full(), Full(), Full(), Full(), Full()}, {}},
      {"Mixed",
       {Full(), Full(), Share(1, kAlign), Cluster(map), Drop(), KvFrom(0)},
       {{Full(), Full(), Share(1), Cluster(map), Drop(), KvFrom(0)},
        {Full(), Full(), Share(1, Inverse(kAlign)), Cluster(map), Drop(), KvFrom(0)},
        {Full(), Full(), Share(1, kAlign), Cluster({0, 1, 2, 0}), Drop(), KvFrom(0)}}},
      {"ShareSpanClusterDropBias",
       {Full(), Share(0), Share(0, kAlign), Drop(RandomBias(7)), Cluster({0, 0, 0, 3}), Full()},
       {{Full(), Share(0), Share(0, kAlign), Drop(RandomBias(7)), Cluster({0, 1, 0, 3}), Full()}}},
      {"Share",
       {Full(), Full(), Share(1, kAlign), Full(), Full(), Full()},
       {{Full(), Full(), Share(1), Full(), Full(), Full()}}},
      {"Cluster",
       {Full(), Full(), Full(), Cluster({0, 1, 0, 1}), Full(), Full()},
       {{Full(), Full(), Full(), Cluster({0, 0, 2, 2}), Full(), Full()}}},
      {"ClusterOne", {Full(), Full(), Full(), Full(), Cluster({0, 0, 0, 0}), Full()}, {}},
      {"Drop", {Full(), Full(), Full(), Full(), Drop(), Full()}, {}},
      {"DropWithBias", {Full(), Full(), Full(), Full(), Drop(RandomBias(11)), Full()}, {}},
      {"KvFrom", {Full(), Full(), Full(), Full(), Full(), KvFrom(2)}, {}},
  };
}

// A plan and the model's head dim.
using PlanAndHeadDim = std::tuple<PlanCase, int>;

std::string TestName(const ::testing::TestParamInfo<PlanAndHeadDim>& info) {
  return std::get<0>(info.param).name + "_HeadDim" + std::to_string(std::get<1>(info.param));
}

class FoldedReferenceTest : public ::testing::TestWithParam<PlanAndHeadDim> {
 protected:
  void SetUp() override {
    model_dir_ = dir_.File("model");
    tiny_ = WriteTinyModel(model_dir_, std::get<1>(GetParam()));
    auto unfolded = LoadModel(model_dir_, *ops_);
    ASSERT_TRUE(unfolded.ok()) << unfolded.status();
    unfolded_ = *std::move(unfolded);
    auto folded = LoadModel(model_dir_, *ops_, WritePlan(dir_.path(), model_dir_, Case().plan));
    ASSERT_TRUE(folded.ok()) << folded.status();
    model_ = *std::move(folded);
  }

  std::unique_ptr<Ops> ops_ = NewCpuOps(2);
  testing::ScratchDir dir_;
  std::string model_dir_;
  const PlanCase& Case() const { return std::get<0>(GetParam()); }

  TinyModel tiny_;
  std::unique_ptr<LlamaModel> unfolded_, model_;
};

// Prefill, chunked prefills, prefill + decode: every position's logits equal the reference's.
TEST_P(FoldedReferenceTest, LogitsMatchTheReference) {
  std::mt19937 rng(17);
  std::vector<int32_t> ids = {1};
  const std::vector<int32_t> tail = RandomTokens(rng, 44);
  ids.insert(ids.end(), tail.begin(), tail.end());
  const Matrix ref = ReferenceLogits(tiny_, Case().plan, ids);
  const double tolerance = kRelativeTolerance * MaxAbs(ref);
  ASSERT_GT(MaxAbs(ref), 1.0);

  const std::vector<std::pair<std::string, std::vector<int>>> ways = {
      {"prefill", {static_cast<int>(ids.size())}},
      {"chunks of 3", {3}},
      {"chunks of 7", {7}},
      {"chunks of 16 (the block size)", {16}},
      {"chunks of 5, 11, 2, ...", {5, 11, 2}},
      {"prefill 9 + decode", {9, 1}},
      {"prefill 1 + decode", {1}},
  };
  for (const auto& [name, chunks] : ways) {
    const std::vector<float> ours = RunInChunks(*model_, *ops_, ids, chunks);
    ASSERT_EQ(ours.size(), ids.size() * kVocab) << name;
    EXPECT_LE(MaxDiff(ours, ref), tolerance) << name;
  }

  // The tolerance is tight enough to see folding: the unfolded model and every perturbed head map
  // are far outside it.
  if (Case().name != "AllFull") {
    const std::vector<float> full =
        RunInChunks(*unfolded_, *ops_, ids, {static_cast<int>(ids.size())});
    EXPECT_GT(MaxDiff(full, ref), 100 * tolerance) << "the fold changes nothing measurable";
  }
  const std::vector<float> ours = RunInChunks(*model_, *ops_, ids, {static_cast<int>(ids.size())});
  for (const RefPlan& other : Case().perturbed) {
    EXPECT_GT(MaxDiff(ours, ReferenceLogits(tiny_, other, ids)), 100 * tolerance)
        << "a changed head map is not seen";
  }
}

// A clustered layer uses the same head map at every step of a sequence's life: after a prompt
// shorter and one longer than the CHAI window, each decode step's logits equal the reference
// (static map) and are far from the reference with any other valid map for that layer.
TEST_P(FoldedReferenceTest, EveryDecodeStepMatchesTheReference) {
  std::mt19937 rng(5);
  std::vector<int32_t> ids = {1};
  const std::vector<int32_t> tail = RandomTokens(rng, 29);
  ids.insert(ids.end(), tail.begin(), tail.end());
  const Matrix ref = ReferenceLogits(tiny_, Case().plan, ids);
  const double tolerance = kRelativeTolerance * MaxAbs(ref);
  std::vector<Matrix> others;
  for (const RefPlan& other : Case().perturbed) {
    others.push_back(ReferenceLogits(tiny_, other, ids));
  }
  for (int prompt : {3, 8}) {
    SequenceRunner runner(*model_, *ops_, static_cast<int32_t>(ids.size()), DType::kF32);
    absl::StatusOr<std::vector<float>> logits =
        runner.Append(absl::MakeConstSpan(ids).first(prompt));
    for (size_t p = prompt - 1; p < ids.size(); ++p) {
      ASSERT_TRUE(logits.ok()) << logits.status();
      EXPECT_LE(MaxDiff(*logits, ref, p), tolerance) << "prompt " << prompt << ", position " << p;
      for (const Matrix& other : others) {
        if (p < 4) continue;  // over one token every head map gives the same output
        EXPECT_GT(MaxDiff(*logits, other, p), 10 * tolerance) << "position " << p;
      }
      if (p + 1 < ids.size()) logits = runner.Append(absl::MakeConstSpan(ids).subspan(p + 1, 1));
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Plans, FoldedReferenceTest,
                         ::testing::Combine(::testing::ValuesIn(PlanCases()),
                                            ::testing::Values(8, 16)),
                         TestName);

// A prefill so long that its attention probabilities (tokens x heads x context floats, 1500 x 8 x
// 1500) exceed what LlamaModel keeps per step (16M floats): share layers then recompute their
// source's probabilities from its queries and keys (the head map's K heads matter) instead of
// reading them; the decode steps after it read kept ones. Both must match the reference. Most
// layers are dropped to keep the double-precision reference quick.
TEST(FoldedReferenceLongTest, ShareLayersRecomputingProbabilitiesMatchTheReference) {
  std::unique_ptr<Ops> ops = NewCpuOps(2);
  testing::ScratchDir dir;
  const std::string model_dir = dir.File("model");
  const TinyModel tiny = WriteTinyModel(model_dir, /*head_dim=*/16);
  const RefPlan plan = {Full(), Share(0, kAlign), Drop(), Share(0, Inverse(kAlign)), Drop(),
                        Drop()};
  auto model = LoadModel(model_dir, *ops, WritePlan(dir.path(), model_dir, plan));
  ASSERT_TRUE(model.ok()) << model.status();
  std::mt19937 rng(3);
  std::vector<int32_t> ids = {1};
  const std::vector<int32_t> tail = RandomTokens(rng, 1501);
  ids.insert(ids.end(), tail.begin(), tail.end());
  const Matrix ref = ReferenceLogits(tiny, plan, ids);
  const double tolerance = kRelativeTolerance * MaxAbs(ref);

  SequenceRunner runner(**model, *ops, static_cast<int32_t>(ids.size()), DType::kF32);
  const size_t prompt = 1500;
  absl::StatusOr<std::vector<float>> logits =
      runner.Append(absl::MakeConstSpan(ids).first(prompt), /*all_logits=*/true);
  ASSERT_TRUE(logits.ok()) << logits.status();
  EXPECT_LE(MaxDiff(*logits, ref), tolerance) << "prefill";
  for (size_t p = prompt; p < ids.size(); ++p) {
    logits = runner.Append(absl::MakeConstSpan(ids).subspan(p, 1));
    ASSERT_TRUE(logits.ok()) << logits.status();
    EXPECT_LE(MaxDiff(*logits, ref, p), tolerance) << "decode at " << p;
  }
}

// ---------------------------------------------------------------------------------------------
// Through the engine.

constexpr int kNumRequests = 24;
constexpr int32_t kBlockSize = 8;
constexpr int32_t kNumBlocks = 28;  // 224 tokens: two or three sequences at a time

struct EngineRun {
  std::vector<std::vector<int32_t>> tokens;
  std::vector<std::vector<TokenLogprob>> logprobs;
  EngineStats stats;
};

// BOS, then for most requests one of three shared prefixes (longer than a block), then a random
// tail; a few prompts are shorter than the CHAI window.
std::vector<Request> MakeRequests() {
  std::mt19937 rng(99);
  std::vector<std::vector<int32_t>> prefixes;
  for (int n : {12, 20, 30}) prefixes.push_back(RandomTokens(rng, n));
  std::vector<Request> requests(kNumRequests);
  for (int i = 0; i < kNumRequests; ++i) {
    Request& r = requests[i];
    r.id = 100 + i;
    r.prompt_token_ids = {1};
    if (i % 6 != 5) {
      const auto& p = prefixes[i % 3];
      r.prompt_token_ids.insert(r.prompt_token_ids.end(), p.begin(), p.end());
    }
    const std::vector<int32_t> tail =
        RandomTokens(rng, std::uniform_int_distribution<int>(1, 24)(rng));
    r.prompt_token_ids.insert(r.prompt_token_ids.end(), tail.begin(), tail.end());
    r.max_tokens = std::uniform_int_distribution<int>(6, 24)(rng);
    r.sampling.logprobs = true;
    r.sampling.top_logprobs = 20;
  }
  return requests;
}

EngineRun RunEngine(LlamaModel& model, Ops& ops, const std::vector<Request>& requests) {
  KvCache cache(ops, model.kv_layer_shapes(), kNumBlocks, kBlockSize, DType::kF32);
  ModelExecutor executor(model, cache);
  SchedulerConfig config;
  config.max_num_batched_tokens = 20;  // prompts of up to 55 tokens prefill in chunks
  config.max_num_seqs = 8;
  config.max_model_len = model.config().MaxContext();  // no EOS: every request runs max_tokens
  EngineRun run;
  run.tokens.resize(requests.size());
  run.logprobs.resize(requests.size());
  std::mutex mu;
  std::condition_variable done_cv;
  size_t done = 0;
  Engine engine(config, kNumBlocks, kBlockSize, model.plan().cache_salt(), executor);
  for (size_t i = 0; i < requests.size(); ++i) {
    const absl::Status s = engine.Submit(requests[i], [&, i](const RequestOutput& o) {
      std::lock_guard<std::mutex> lock(mu);
      run.tokens[i].insert(run.tokens[i].end(), o.token_ids.begin(), o.token_ids.end());
      run.logprobs[i].insert(run.logprobs[i].end(), o.logprobs.begin(), o.logprobs.end());
      if (o.finish_reason) {
        EXPECT_EQ(*o.finish_reason, FinishReason::kLength) << "request " << i;
        ++done;
        done_cv.notify_all();
      }
    });
    EXPECT_TRUE(s.ok()) << s;
  }
  std::unique_lock<std::mutex> lock(mu);
  EXPECT_TRUE(
      done_cv.wait_for(lock, std::chrono::minutes(2), [&] { return done == requests.size(); }))
      << done << " of " << requests.size() << " requests finished";
  run.stats = engine.Stats();
  return run;
}

std::vector<int32_t> RunAlone(LlamaModel& model, Ops& ops, const Request& r) {
  const int32_t prompt = static_cast<int32_t>(r.prompt_token_ids.size());
  SequenceRunner runner(model, ops, prompt + r.max_tokens, DType::kF32);
  absl::StatusOr<std::vector<float>> logits = runner.Append(r.prompt_token_ids);
  std::vector<int32_t> out;
  while (logits.ok()) {
    out.push_back(ArgMax(*logits));
    if (static_cast<int32_t>(out.size()) == r.max_tokens) return out;
    logits = runner.Append(absl::MakeConstSpan(&out.back(), 1));
  }
  ADD_FAILURE() << logits.status();
  return out;
}

class FoldedEngineTest : public ::testing::TestWithParam<PlanAndHeadDim> {};

// Many greedy requests with shared prefixes through one engine that chunks, hits the prefix cache
// and preempts: each request's tokens equal its run alone and the reference's greedy continuation,
// and every step's log-probabilities (the sampled token's and the top 20) equal the reference's
// log-softmax, so no step of any sequence (recomputed ones included) used another head map.
TEST_P(FoldedEngineTest, GreedyRequestsMatchAloneAndTheReference) {
  std::unique_ptr<Ops> ops = NewCpuOps(2);
  testing::ScratchDir dir;
  const std::string model_dir = dir.File("model");
  const TinyModel tiny = WriteTinyModel(model_dir, std::get<1>(GetParam()));
  const RefPlan& plan = std::get<0>(GetParam()).plan;
  auto model = LoadModel(model_dir, *ops, WritePlan(dir.path(), model_dir, plan));
  ASSERT_TRUE(model.ok()) << model.status();
  ASSERT_TRUE((*model)->plan().folded());

  const std::vector<Request> requests = MakeRequests();
  const EngineRun run = RunEngine(**model, *ops, requests);
  EXPECT_GT(run.stats.num_preemptions, 0) << "the pool should force preemption";
  EXPECT_GT(run.stats.prefix_cache_hits, 0) << "shared prefixes should hit the prefix cache";

  for (size_t i = 0; i < requests.size(); ++i) {
    const Request& r = requests[i];
    const std::vector<int32_t>& tokens = run.tokens[i];
    ASSERT_EQ(tokens.size(), static_cast<size_t>(r.max_tokens)) << "request " << i;
    EXPECT_EQ(tokens, RunAlone(**model, *ops, r)) << "request " << i << " differs from alone";

    // The reference, teacher-forced on the engine's tokens: row prompt - 1 + k predicts token k.
    std::vector<int32_t> seq = r.prompt_token_ids;
    seq.insert(seq.end(), tokens.begin(), tokens.end() - 1);
    const Matrix ref = ReferenceLogits(tiny, plan, seq);
    const double tolerance = kRelativeTolerance * MaxAbs(ref);
    ASSERT_EQ(run.logprobs[i].size(), tokens.size());
    for (size_t k = 0; k < tokens.size(); ++k) {
      const std::vector<double>& row = ref[r.prompt_token_ids.size() - 1 + k];
      // Each token is the reference's argmax (up to a near-tie within the tolerance, which F32 may
      // break either way): the engine's tokens are the reference's greedy continuation.
      EXPECT_GE(row[tokens[k]], *std::max_element(row.begin(), row.end()) - tolerance)
          << "request " << i << ", token " << k;
      // Log-softmax: the logits' error plus that of the log-sum-exp.
      const std::vector<double> lsm = LogSoftmax(row);
      const TokenLogprob& lp = run.logprobs[i][k];
      EXPECT_NEAR(lp.logprob, lsm[tokens[k]], 2 * tolerance) << "request " << i << ", token " << k;
      ASSERT_EQ(lp.top.size(), 20u);
      for (const auto& [id, logprob] : lp.top) {
        EXPECT_NEAR(logprob, lsm[id], 2 * tolerance) << "request " << i << ", token " << k;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Plans, FoldedEngineTest,
                         ::testing::Values(PlanAndHeadDim{PlanCases()[1], 8},
                                           PlanAndHeadDim{PlanCases()[1], 16},
                                           PlanAndHeadDim{PlanCases()[2], 16},
                                           PlanAndHeadDim{PlanCases()[4], 8}),
                         TestName);

}  // namespace
}  // namespace kvfold
