#include "worker/model_executor.h"

#include <algorithm>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_format.h"
#include "worker/device_sampler.h"
#include "worker/sampler.h"
#include "worker/status_macros.h"

namespace kvfold {

namespace {

absl::Status CheckHistory(const ScheduledChunk& c,
                          const absl::flat_hash_map<RequestId, std::vector<int32_t>>& histories,
                          const absl::flat_hash_set<RequestId>& finished) {
  if (!c.sampling.NeedsHistory() || c.start_position == 0) return absl::OkStatus();
  if (!c.context_token_ids.empty()) {
    if (static_cast<int64_t>(c.context_token_ids.size()) == c.start_position) {
      return absl::OkStatus();
    }
    return absl::InvalidArgumentError(
        absl::StrFormat("request %d: %d context tokens for a chunk at position %d", c.request_id,
                        c.context_token_ids.size(), c.start_position));
  }
  auto it = histories.find(c.request_id);
  const int64_t known =
      it == histories.end() || finished.contains(c.request_id) ? 0 : it->second.size();
  if (known < c.start_position) {
    return absl::InvalidArgumentError(
        absl::StrFormat("request %d: the executor knows %d of its tokens, the chunk starts at %d",
                        c.request_id, known, c.start_position));
  }
  return absl::OkStatus();
}

}  // namespace

ModelExecutor::ModelExecutor(LlamaModel& model, const KvCache& cache)
    : model_(model), cache_(cache) {}

absl::Status ModelExecutor::Validate(const StepPlan& plan) const {
  if (plan.chunks.empty()) return absl::InvalidArgumentError("empty step plan");
  const int32_t bs = cache_.block_size();
  const int32_t max_context = model_.config().MaxContext();
  absl::flat_hash_set<RequestId> requests;
  absl::flat_hash_set<int64_t> slots;
  const absl::flat_hash_set<RequestId> finished(plan.finished.begin(), plan.finished.end());
  for (const ScheduledChunk& c : plan.chunks) {
    const int64_t n = static_cast<int64_t>(c.token_ids.size());
    if (!requests.insert(c.request_id).second) {
      return absl::InvalidArgumentError(
          absl::StrFormat("request %d has two chunks in one step", c.request_id));
    }
    if (n == 0 || c.start_position < 0 || c.start_position + n > max_context) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "request %d: chunk of %d tokens at position %d does not fit the model's context of %d",
          c.request_id, n, c.start_position, max_context));
    }
    const int64_t end = c.start_position + n;
    if (static_cast<int64_t>(c.block_table.size()) * bs < end) {
      return absl::InvalidArgumentError(
          absl::StrFormat("request %d: %d blocks of %d tokens do not cover %d tokens", c.request_id,
                          c.block_table.size(), bs, end));
    }
    for (BlockId b : c.block_table) {
      if (b < 0 || b >= cache_.num_blocks()) {
        return absl::InvalidArgumentError(
            absl::StrFormat("request %d: block id %d outside the pool [0, %d)", c.request_id, b,
                            cache_.num_blocks()));
      }
    }
    if (absl::Status h = CheckHistory(c, histories_, finished); !h.ok()) return h;
    if (c.prompt_logprobs.has_value() &&
        (*c.prompt_logprobs < 0 || c.next_prompt_token >= model_.config().vocab_size ||
         (c.next_prompt_token >= 0) == c.sample)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "request %d: prompt logprobs need either a next prompt token in the vocabulary or a "
          "sampling chunk",
          c.request_id));
    }
    for (int64_t p = c.start_position; p < end; ++p) {
      const int64_t slot = int64_t{c.block_table[p / bs]} * bs + p % bs;
      if (!slots.insert(slot).second) {
        return absl::InvalidArgumentError(
            absl::StrFormat("request %d writes cache slot %d that another token of this step "
                            "also writes",
                            c.request_id, slot));
      }
    }
  }
  return absl::OkStatus();
}

void ModelExecutor::Flatten(const StepPlan& plan, Batch& b) const {
  const int32_t bs = cache_.block_size();
  b.token_ids.clear();
  b.positions.clear();
  b.slot_mapping.clear();
  b.logits_rows.clear();
  b.query_start.assign(1, 0);
  b.context_len.clear();
  b.max_blocks_per_seq = 0;
  for (const ScheduledChunk& c : plan.chunks) {
    b.max_blocks_per_seq =
        std::max(b.max_blocks_per_seq, static_cast<int32_t>(c.block_table.size()));
  }
  // Padding entries lie past every context, so they are never read; 0 is simply a valid id.
  b.block_tables.assign(plan.chunks.size() * static_cast<size_t>(b.max_blocks_per_seq), 0);
  for (size_t s = 0; s < plan.chunks.size(); ++s) {
    const ScheduledChunk& c = plan.chunks[s];
    const int32_t n = static_cast<int32_t>(c.token_ids.size());
    std::copy(c.block_table.begin(), c.block_table.end(),
              b.block_tables.begin() + s * b.max_blocks_per_seq);
    b.token_ids.insert(b.token_ids.end(), c.token_ids.begin(), c.token_ids.end());
    for (int32_t i = 0; i < n; ++i) {
      const int32_t p = c.start_position + i;
      b.positions.push_back(p);
      b.slot_mapping.push_back(int64_t{c.block_table[p / bs]} * bs + p % bs);
    }
    b.query_start.push_back(b.query_start.back() + n);
    b.context_len.push_back(c.start_position + n);
    // A prompt-scoring chunk wants its scored rows (the first num_prompt_scores()), then the
    // sampling row if any: together, every row of the chunk in order.
    for (int32_t i = 0; i < c.num_prompt_scores(); ++i) {
      b.logits_rows.push_back(b.query_start.back() - n + i);
    }
    if (c.sample) b.logits_rows.push_back(b.query_start.back() - 1);
  }
}

absl::StatusOr<StepResult> ModelExecutor::Execute(const StepPlan& plan) {
  KVFOLD_RETURN_IF_ERROR(Validate(plan));
  Flatten(plan, batch_);
  UpdateHistories(plan);
  ForwardBatch fb;
  fb.token_ids = batch_.token_ids;
  fb.positions = batch_.positions;
  fb.attention.query_start = batch_.query_start;
  fb.attention.context_len = batch_.context_len;
  fb.attention.block_tables = batch_.block_tables;
  fb.attention.max_blocks_per_seq = batch_.max_blocks_per_seq;
  fb.attention.slot_mapping = batch_.slot_mapping;
  fb.logits_rows = batch_.logits_rows;
  StepResult result;
  result.sampled.reserve(batch_.logits_rows.size());
  if (device_sampler_ != nullptr && model_.tensor_parallel().size == 1) {
    KVFOLD_RETURN_IF_ERROR(ForwardAndSampleOnDevice(plan, fb, result));
  } else {
    KVFOLD_RETURN_IF_ERROR(ForwardAndSampleOnHost(plan, fb, result));
  }
  return result;
}

template <typename NextRow>
void ModelExecutor::ScorePrompt(const ScheduledChunk& c, NextRow next_row,
                                StepResult& result) const {
  ChunkPromptLogprobs& scores = result.prompt_logprobs.emplace_back();
  scores.request_id = c.request_id;
  const int32_t num_scores = c.num_prompt_scores();
  scores.logprobs.reserve(num_scores);
  for (int32_t i = 0; i < num_scores; ++i) {
    const int32_t target =
        i + 1 < static_cast<int32_t>(c.token_ids.size()) ? c.token_ids[i + 1] : c.next_prompt_token;
    scores.logprobs.push_back(ScoreToken(next_row(), target, *c.prompt_logprobs));
  }
}

absl::Status ModelExecutor::ForwardAndSampleOnHost(const StepPlan& plan, const ForwardBatch& fb,
                                                   StepResult& result) {
  const size_t vocab = static_cast<size_t>(model_.config().vocab_size);
  logits_.resize(batch_.logits_rows.size() * vocab);
  KVFOLD_RETURN_IF_ERROR(model_.Forward(fb, cache_, logits_.data()));
  size_t row = 0;
  auto next_row = [&] { return absl::Span<const float>(logits_.data() + row++ * vocab, vocab); };
  for (const ScheduledChunk& c : plan.chunks) {
    if (c.prompt_logprobs.has_value()) ScorePrompt(c, next_row, result);
    if (c.sample) result.sampled.push_back(SampleChunk(c, next_row()));
  }
  return absl::OkStatus();
}

absl::Status ModelExecutor::ForwardAndSampleOnDevice(const StepPlan& plan, const ForwardBatch& fb,
                                                     StepResult& result) {
  const int32_t vocab = model_.config().vocab_size;
  KVFOLD_ASSIGN_OR_RETURN(const TensorView logits, model_.ForwardToDeviceLogits(fb, cache_));
  // Rows that need host logits (prompt scores, logprobs) are copied; the others sample on the
  // device, in chunk order.
  host_rows_.clear();
  std::vector<DeviceSampleRequest> requests;
  int32_t row = 0;
  for (const ScheduledChunk& c : plan.chunks) {
    for (int32_t i = 0; i < c.num_prompt_scores(); ++i) host_rows_.push_back(row++);
    if (!c.sample) continue;
    if (c.sampling.logprobs) {
      host_rows_.push_back(row++);
    } else {
      requests.push_back({row++, &c.sampling, static_cast<uint64_t>(c.output_index), HistoryOf(c)});
    }
  }
  logits_.resize(host_rows_.size() * static_cast<size_t>(vocab));
  KVFOLD_RETURN_IF_ERROR(device_sampler_->CopyRowsToHost(logits.f32(), logits.rows, vocab,
                                                         host_rows_, logits_.data()));
  device_tokens_.resize(requests.size());
  KVFOLD_RETURN_IF_ERROR(device_sampler_->Sample(logits.f32(), logits.rows, vocab,
                                                 PackDeviceSamplingBatch(requests, vocab),
                                                 absl::MakeSpan(device_tokens_)));
  size_t host_row = 0, device_row = 0;
  auto next_row = [&] {
    return absl::Span<const float>(logits_.data() + host_row++ * vocab, vocab);
  };
  for (const ScheduledChunk& c : plan.chunks) {
    if (c.prompt_logprobs.has_value()) ScorePrompt(c, next_row, result);
    if (!c.sample) continue;
    if (c.sampling.logprobs) {
      result.sampled.push_back(SampleChunk(c, next_row()));
    } else {
      SampledToken& t = result.sampled.emplace_back();
      t.request_id = c.request_id;
      t.token_id = device_tokens_[device_row++];
    }
  }
  return absl::OkStatus();
}

void ModelExecutor::UpdateHistories(const StepPlan& plan) {
  for (RequestId id : plan.finished) histories_.erase(id);
  for (const ScheduledChunk& c : plan.chunks) {
    if (!c.sampling.NeedsHistory()) continue;
    std::vector<int32_t>& h = histories_[c.request_id];
    if (!c.context_token_ids.empty()) {
      h = c.context_token_ids;
    } else {
      CHECK_GE(h.size(), static_cast<size_t>(c.start_position)) << "checked by Validate";
      h.resize(c.start_position);
    }
    h.insert(h.end(), c.token_ids.begin(), c.token_ids.end());
  }
}

TokenHistory ModelExecutor::HistoryOf(const ScheduledChunk& c) const {
  TokenHistory history;
  if (c.sampling.NeedsHistory()) {
    const absl::Span<const int32_t> tokens = histories_.at(c.request_id);
    CHECK_LE(static_cast<size_t>(c.output_index), tokens.size());
    const size_t num_prompt = tokens.size() - c.output_index;
    history.prompt = tokens.first(num_prompt);
    history.output = tokens.subspan(num_prompt);
  }
  return history;
}

SampledToken ModelExecutor::SampleChunk(const ScheduledChunk& c,
                                        absl::Span<const float> logits) const {
  SampledToken t;
  t.request_id = c.request_id;
  t.token_id = Sample(logits, c.sampling, c.output_index, HistoryOf(c));
  if (c.sampling.logprobs) {
    t.logprob = LogProbability(logits, t.token_id);
    t.top_logprobs = TopLogprobs(logits, c.sampling.top_logprobs);
  }
  return t;
}

}  // namespace kvfold
