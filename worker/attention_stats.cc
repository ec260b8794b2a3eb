#include "worker/attention_stats.h"

#include <algorithm>
#include <cmath>

#include "glog/logging.h"

namespace kvfold {
namespace {

double Cosine(const float* a, const float* b, int n) {
  double ab = 0.0, aa = 0.0, bb = 0.0;
  for (int i = 0; i < n; ++i) {
    ab += static_cast<double>(a[i]) * b[i];
    aa += static_cast<double>(a[i]) * a[i];
    bb += static_cast<double>(b[i]) * b[i];
  }
  return aa > 0.0 && bb > 0.0 ? ab / std::sqrt(aa * bb) : 0.0;
}

}  // namespace

std::vector<float> CausalAttentionProbs(absl::Span<const float> q, absl::Span<const float> k,
                                        int tokens, int num_heads, int num_kv_heads, int head_dim,
                                        float scale) {
  CHECK_EQ(q.size(), static_cast<size_t>(tokens) * num_heads * head_dim);
  CHECK_EQ(k.size(), static_cast<size_t>(tokens) * num_kv_heads * head_dim);
  const int group = num_heads / num_kv_heads;
  std::vector<float> probs(static_cast<size_t>(num_heads) * tokens * tokens, 0.0f);
  std::vector<double> row(tokens);
  for (int h = 0; h < num_heads; ++h) {
    const int kv = h / group;
    for (int t = 0; t < tokens; ++t) {
      const float* qv = q.data() + (static_cast<size_t>(t) * num_heads + h) * head_dim;
      double max_score = -INFINITY;
      for (int s = 0; s <= t; ++s) {
        const float* kv_row = k.data() + (static_cast<size_t>(s) * num_kv_heads + kv) * head_dim;
        double dot = 0.0;
        for (int i = 0; i < head_dim; ++i) dot += static_cast<double>(qv[i]) * kv_row[i];
        row[s] = dot * scale;
        max_score = std::max(max_score, row[s]);
      }
      double denom = 0.0;
      for (int s = 0; s <= t; ++s) denom += row[s] = std::exp(row[s] - max_score);
      float* out = probs.data() + (static_cast<size_t>(h) * tokens + t) * tokens;
      for (int s = 0; s <= t; ++s) out[s] = static_cast<float>(row[s] / denom);
    }
  }
  return probs;
}

std::vector<double> ProbabilitySimilarity(absl::Span<const float> probs_a,
                                          absl::Span<const float> probs_b, int tokens,
                                          int num_heads) {
  const size_t per_head = static_cast<size_t>(tokens) * tokens;
  CHECK_EQ(probs_a.size(), per_head * num_heads);
  CHECK_EQ(probs_b.size(), per_head * num_heads);
  std::vector<double> sim(static_cast<size_t>(num_heads) * num_heads, 0.0);
  if (tokens < 2) return sim;
  for (int i = 0; i < num_heads; ++i) {
    for (int j = 0; j < num_heads; ++j) {
      double sum = 0.0;
      for (int t = 1; t < tokens; ++t) {
        sum += Cosine(probs_a.data() + i * per_head + static_cast<size_t>(t) * tokens,
                      probs_b.data() + j * per_head + static_cast<size_t>(t) * tokens, t + 1);
      }
      sim[i * num_heads + j] = sum / (tokens - 1);
    }
  }
  return sim;
}

std::vector<float> ChaiFeatures(absl::Span<const float> probs, int tokens, int num_heads,
                                int num_kv_heads, int window) {
  CHECK_GE(tokens, window);
  CHECK_EQ(probs.size(), static_cast<size_t>(num_heads) * tokens * tokens);
  CHECK_EQ(num_heads % num_kv_heads, 0);
  std::vector<float> features;
  features.reserve(static_cast<size_t>(num_heads) * window * window);
  for (int h = 0; h < num_heads; ++h) {  // heads of KV group g are [g * group, (g + 1) * group)
    for (int t = 0; t < window; ++t) {
      const float* row = probs.data() + (static_cast<size_t>(h) * tokens + t) * tokens;
      features.insert(features.end(), row, row + window);
    }
  }
  return features;
}

void DropScore::Add(absl::Span<const float> x, absl::Span<const float> a, int hidden) {
  CHECK_EQ(x.size(), a.size());
  CHECK_EQ(x.size() % hidden, 0u);
  std::vector<float> sum(hidden);
  for (size_t t = 0; t < x.size() / hidden; ++t) {
    const float* xt = x.data() + t * hidden;
    const float* at = a.data() + t * hidden;
    for (int i = 0; i < hidden; ++i) sum[i] = xt[i] + at[i];
    sum_ += Cosine(xt, sum.data(), hidden);
    ++count_;
  }
}

}  // namespace kvfold
