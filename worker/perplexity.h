// Perplexity of a model over text: the arithmetic behind `kvfold eval`, and what `kvfold
// calibrate` calls in-process to measure a candidate plan's loss.
//
// The text is cut into windows of at most `context` tokens, each run from position 0 on its own
// (no state carries between windows). Within a window, every token after the first is scored by
// the logits of the row before it; the first is only context (BOS, where the model uses one).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "worker/kv_cache.h"
#include "worker/llama_model.h"

namespace kvfold {

struct PerplexityResult {
  double nll_sum = 0;            // Σ -log p(token | its prefix in the window), natural log
  int64_t tokens_scored = 0;     // how many tokens the sum covers
  int64_t tokens_forwarded = 0;  // every row run through the model (scored + window starts)
  double seconds = 0;            // wall time of the forward passes and the scoring

  double MeanNll() const;     // nll_sum / tokens_scored (NaN when nothing was scored)
  double Perplexity() const;  // exp(MeanNll())
};

// -log softmax(logits)[target], computed in double precision (log-sum-exp with the maximum
// subtracted, so large logits do not overflow).
double TokenNll(absl::Span<const float> logits, int32_t target);

// Windows over `text_ids`: each is `bos` (when given) followed by the next text tokens, at most
// `context` tokens in all, so a window scores context - 1 tokens. Consecutive windows do not
// overlap. Stops once `max_scored` tokens (0: no cap) would be scored, cutting the last window
// short; a trailing window that would score nothing is left out.
std::vector<std::vector<int32_t>> MakePerplexityWindows(absl::Span<const int32_t> text_ids,
                                                        std::optional<int32_t> bos, int context,
                                                        int64_t max_scored = 0);

struct PerplexityOptions {
  // Rows per forward pass: bounds the logits buffer at chunk_rows x vocab floats.
  int chunk_rows = 128;
  // Called after each chunk with the tokens forwarded so far and in all (a progress bar).
  std::function<void(int64_t done, int64_t total)> progress;
};

// Runs every window through `model`, writing K/V into `cache` at slots 0, 1, 2, ... (blocks 0..n
// in order, reused by each window), and sums the NLL of the scored tokens. The cache must hold the
// longest window. Token ids outside the vocabulary are an InvalidArgument error.
absl::StatusOr<PerplexityResult> EvaluatePerplexity(LlamaModel& model, const KvCache& cache,
                                                    absl::Span<const std::vector<int32_t>> windows,
                                                    const PerplexityOptions& options = {});

// A cache holding one window of `context` tokens for `model`, shaped by its attention plan.
std::unique_ptr<KvCache> NewWindowCache(const LlamaModel& model, Ops& ops, int context,
                                        DType dtype);

// Bytes one token occupies in `cache`, over all its layers (plan-aware: it reads the layer shapes
// the cache was built with).
size_t CacheBytesPerToken(const KvCache& cache);

}  // namespace kvfold
