#include "worker/perplexity.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>

#include "absl/strings/str_format.h"
#include "worker/lockstep_batch.h"

namespace kvfold {

double PerplexityResult::MeanNll() const {
  return tokens_scored > 0 ? nll_sum / static_cast<double>(tokens_scored)
                           : std::numeric_limits<double>::quiet_NaN();
}

double PerplexityResult::Perplexity() const { return std::exp(MeanNll()); }

double TokenNll(absl::Span<const float> logits, int32_t target) {
  const float max = *std::max_element(logits.begin(), logits.end());
  double sum = 0;
  for (float x : logits) sum += std::exp(static_cast<double>(x) - max);
  return std::log(sum) + max - static_cast<double>(logits[target]);
}

std::vector<std::vector<int32_t>> MakePerplexityWindows(absl::Span<const int32_t> text_ids,
                                                        std::optional<int32_t> bos, int context,
                                                        int64_t max_scored) {
  std::vector<std::vector<int32_t>> windows;
  const int prefix = bos.has_value() ? 1 : 0;
  const size_t text_per_window = static_cast<size_t>(std::max(0, context - prefix));
  if (text_per_window == 0 || context < 2) return windows;
  int64_t scored = 0;
  for (size_t begin = 0; begin < text_ids.size(); begin += text_per_window) {
    size_t take = std::min(text_per_window, text_ids.size() - begin);
    if (max_scored > 0) {
      // A window of n tokens scores n - 1 of them.
      const int64_t room = max_scored - scored;
      take = std::min<size_t>(take, static_cast<size_t>(room + 1 - prefix));
    }
    if (prefix + take < 2) break;
    std::vector<int32_t> window;
    window.reserve(prefix + take);
    if (bos.has_value()) window.push_back(*bos);
    window.insert(window.end(), text_ids.begin() + begin, text_ids.begin() + begin + take);
    scored += static_cast<int64_t>(window.size()) - 1;
    windows.push_back(std::move(window));
    if (max_scored > 0 && scored >= max_scored) break;
  }
  return windows;
}

absl::StatusOr<PerplexityResult> EvaluatePerplexity(LlamaModel& model, const KvCache& cache,
                                                    absl::Span<const std::vector<int32_t>> windows,
                                                    const PerplexityOptions& options) {
  const int32_t vocab = model.config().vocab_size;
  if (options.chunk_rows < 1) return absl::InvalidArgumentError("chunk_rows must be >= 1");
  size_t longest = 0;
  int64_t total = 0;
  for (const std::vector<int32_t>& w : windows) {
    longest = std::max(longest, w.size());
    total += static_cast<int64_t>(w.size());
    for (int32_t id : w) {
      if (id < 0 || id >= vocab) {
        return absl::InvalidArgumentError(
            absl::StrFormat("token id %d is outside the vocabulary [0, %d)", id, vocab));
      }
    }
  }
  if (longest > static_cast<size_t>(model.config().MaxContext())) {
    return absl::InvalidArgumentError(
        absl::StrFormat("a window of %d tokens exceeds the model's context of %d", longest,
                        model.config().MaxContext()));
  }
  const int64_t slots = static_cast<int64_t>(cache.num_blocks()) * cache.block_size();
  if (static_cast<int64_t>(longest) > slots) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "a window of %d tokens does not fit the KV cache's %d slots", longest, slots));
  }
  const int32_t blocks = static_cast<int32_t>((longest + cache.block_size() - 1) /
                                              std::max<int32_t>(1, cache.block_size()));
  LockstepBatch batches(std::max(1, blocks), cache.block_size());

  PerplexityResult result;
  const auto start = std::chrono::steady_clock::now();
  std::vector<float> logits;
  for (const std::vector<int32_t>& window : windows) {
    const int32_t length = static_cast<int32_t>(window.size());
    for (int32_t begin = 0; begin < length; begin += options.chunk_rows) {
      const int32_t n = std::min(options.chunk_rows, length - begin);
      const ForwardBatch batch = batches.Append(absl::MakeConstSpan(window).subspan(begin, n),
                                                begin, LockstepBatch::Logits::kAll);
      logits.resize(static_cast<size_t>(n) * vocab);
      if (absl::Status s = model.Forward(batch, cache, logits.data()); !s.ok()) return s;
      for (int32_t i = 0; i < n; ++i) {
        const int32_t next = begin + i + 1;
        if (next >= length) break;  // the window's last row predicts nothing in it
        result.nll_sum +=
            TokenNll(absl::MakeConstSpan(logits).subspan(static_cast<size_t>(i) * vocab, vocab),
                     window[next]);
        ++result.tokens_scored;
      }
      result.tokens_forwarded += n;
      if (options.progress) options.progress(result.tokens_forwarded, total);
    }
  }
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return result;
}

size_t CacheBytesPerToken(const KvCache& cache) {
  std::vector<KvLayerShape> shapes;
  for (int i = 0; i < cache.num_layers(); ++i) {
    const KvCacheLayer layer = cache.layer(i);
    shapes.push_back({layer.num_k_heads, layer.num_v_heads, layer.head_dim});
  }
  return KvBytesPerToken(shapes, cache.dtype());
}

std::unique_ptr<KvCache> NewWindowCache(const LlamaModel& model, Ops& ops, int context,
                                        DType dtype) {
  constexpr int32_t kBlockSize = 16;
  return std::make_unique<KvCache>(ops, model.kv_layer_shapes(),
                                   (context + kBlockSize - 1) / kBlockSize, kBlockSize, dtype);
}

}  // namespace kvfold
