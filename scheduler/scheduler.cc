#include "scheduler/scheduler.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"
#include "glog/logging.h"

namespace kvfold {

enum class SequenceStatus { kWaiting, kRunning, kFinished };

// One request's state. Invariant: tokens[0, num_computed_tokens) are in the KV cache, in the
// blocks of `table`; a running sequence always has a gap (tokens.size() > num_computed_tokens),
// since every step that reaches the end of its tokens samples one more.
struct Scheduler::Sequence {
  Request request;
  std::vector<int32_t> tokens;  // prompt + outputs; kept across preemption, so resume recomputes
  int32_t num_prompt_tokens = 0;
  int32_t num_computed_tokens = 0;
  std::optional<int32_t> num_cached_tokens;  // prefix-cache hit at the first admission
  SequenceStatus status = SequenceStatus::kWaiting;
  BlockTable table;
  int64_t arrival = 0;    // order of Add
  int64_t admission = 0;  // order of the latest admission to running
  // Request::prompt_logprobs until they go out with the first token: the positions scored so
  // far (1, 2, ...); cleared on preemption, since recompute scores them again.
  bool prompt_logprobs_pending = false;
  std::vector<TokenLogprob> prompt_logprobs;

  int32_t num_outputs() const { return static_cast<int32_t>(tokens.size()) - num_prompt_tokens; }
  int32_t gap() const { return static_cast<int32_t>(tokens.size()) - num_computed_tokens; }
};

struct Scheduler::State {
  absl::flat_hash_map<RequestId, std::unique_ptr<Sequence>> sequences;  // every live request
  std::deque<Sequence*> waiting;                                        // by (priority, arrival)
  std::vector<Sequence*> running;   // by (priority, admission): preemption pops the back
  std::vector<Sequence*> aborted;   // finished by Abort, reported by the next Update
  std::vector<RequestId> finished;  // ended since the last plan with chunks (StepPlan::finished)
  int64_t num_arrivals = 0;
  int64_t num_admissions = 0;
  int64_t num_preemptions = 0;
};

namespace {

bool Contains(const std::vector<int32_t>& ids, int32_t id) {
  return std::find(ids.begin(), ids.end(), id) != ids.end();
}

}  // namespace

absl::Status SchedulerConfig::Validate() const {
  if (max_num_batched_tokens < 1) {
    return absl::InvalidArgumentError("max_num_batched_tokens must be at least 1");
  }
  if (max_num_seqs < 1) return absl::InvalidArgumentError("max_num_seqs must be at least 1");
  if (max_model_len < 0) return absl::InvalidArgumentError("max_model_len must be >= 0");
  return absl::OkStatus();
}

Scheduler::Scheduler(const SchedulerConfig& config, BlockManager& blocks)
    : config_(config), blocks_(blocks), state_(std::make_unique<State>()) {
  const absl::Status valid = config_.Validate();
  CHECK(valid.ok()) << valid;
}

Scheduler::~Scheduler() {
  for (auto& [id, seq] : state_->sequences) blocks_.Free(seq->table);
}

int32_t Scheduler::max_len() const {
  const int32_t pool_tokens = blocks_.num_blocks() * blocks_.block_size();
  return config_.max_model_len > 0 ? std::min(config_.max_model_len, pool_tokens) : pool_tokens;
}

absl::Status Scheduler::CheckRequest(const Request& request) const {
  const auto num_prompt = static_cast<int64_t>(request.prompt_token_ids.size());
  if (num_prompt == 0) return absl::InvalidArgumentError("the prompt is empty");
  for (int32_t token : request.prompt_token_ids) {
    if (token < 0) return absl::InvalidArgumentError(absl::StrCat("invalid token id ", token));
  }
  if (request.max_tokens < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_tokens must be at least 1, got ", request.max_tokens));
  }
  if (absl::Status sampling = ValidateSamplingParams(request.sampling); !sampling.ok()) {
    return sampling;
  }
  if (request.prompt_logprobs.has_value() &&
      (*request.prompt_logprobs < 0 || *request.prompt_logprobs > kMaxPromptLogprobs)) {
    return absl::InvalidArgumentError(absl::StrCat("prompt_logprobs must be in [0, ",
                                                   kMaxPromptLogprobs, "], got ",
                                                   *request.prompt_logprobs));
  }
  for (int32_t token : request.stop_token_ids) {
    if (token < 0) return absl::InvalidArgumentError(absl::StrCat("invalid stop token id ", token));
  }
  if (config_.max_model_len > 0 && num_prompt >= config_.max_model_len) {
    return absl::InvalidArgumentError(absl::StrCat("the prompt has ", num_prompt,
                                                   " tokens; max_model_len ", config_.max_model_len,
                                                   " leaves no room for an output token"));
  }
  const int64_t pool_tokens = int64_t{blocks_.num_blocks()} * blocks_.block_size();
  if (num_prompt >= pool_tokens) {
    return absl::InvalidArgumentError(
        absl::StrCat("the prompt has ", num_prompt, " tokens; the KV cache holds ", pool_tokens,
                     " (", blocks_.num_blocks(), " blocks of ", blocks_.block_size(), ")"));
  }
  return absl::OkStatus();
}

absl::Status Scheduler::Add(Request request) {
  if (absl::Status valid = CheckRequest(request); !valid.ok()) return valid;
  if (state_->sequences.contains(request.id)) {
    return absl::InvalidArgumentError(absl::StrCat("request id ", request.id, " is in use"));
  }
  auto seq = std::make_unique<Sequence>();
  seq->tokens = request.prompt_token_ids;
  seq->num_prompt_tokens = static_cast<int32_t>(seq->tokens.size());
  seq->arrival = state_->num_arrivals++;
  seq->prompt_logprobs_pending = request.prompt_logprobs.has_value();
  seq->request = std::move(request);
  InsertWaiting(seq.get());
  const RequestId id = seq->request.id;
  state_->sequences.emplace(id, std::move(seq));
  return absl::OkStatus();
}

void Scheduler::Abort(RequestId id) {
  auto it = state_->sequences.find(id);
  if (it == state_->sequences.end() || it->second->status == SequenceStatus::kFinished) return;
  Sequence* seq = it->second.get();
  if (seq->status == SequenceStatus::kWaiting) {
    state_->waiting.erase(std::find(state_->waiting.begin(), state_->waiting.end(), seq));
  } else {
    state_->running.erase(std::find(state_->running.begin(), state_->running.end(), seq));
  }
  blocks_.Free(seq->table);
  seq->status = SequenceStatus::kFinished;
  state_->aborted.push_back(seq);
  state_->finished.push_back(id);
}

void Scheduler::InsertWaiting(Sequence* seq) {
  auto before = [](const Sequence* a, const Sequence* b) {
    return std::pair(a->request.priority, a->arrival) < std::pair(b->request.priority, b->arrival);
  };
  auto& waiting = state_->waiting;
  waiting.insert(std::upper_bound(waiting.begin(), waiting.end(), seq, before), seq);
}

void Scheduler::InsertRunning(Sequence* seq) {
  auto before = [](const Sequence* a, const Sequence* b) {
    return std::pair(a->request.priority, a->admission) <
           std::pair(b->request.priority, b->admission);
  };
  auto& running = state_->running;
  running.insert(std::upper_bound(running.begin(), running.end(), seq, before), seq);
}

StepPlan Scheduler::Schedule() {
  StepPlan plan;
  plan.chunks.reserve(
      std::min<size_t>(state_->running.size() + state_->waiting.size(), config_.max_num_seqs));
  int32_t budget = config_.max_num_batched_tokens;
  // After a preemption the pool is tight: admitting now would only preempt again next step.
  if (!ScheduleRunning(plan, budget)) AdmitWaiting(plan, budget);
  if (!plan.chunks.empty()) plan.finished.swap(state_->finished);
  VLOG(1) << "step: " << plan.chunks.size() << " chunks, " << plan.num_tokens() << " tokens, "
          << state_->running.size() << " running, " << state_->waiting.size() << " waiting, "
          << blocks_.num_free_blocks() << " free blocks";
  return plan;
}

bool Scheduler::ScheduleRunning(StepPlan& plan, int32_t& budget) {
  auto& running = state_->running;
  bool preempted = false;
  for (size_t i = 0; i < running.size() && budget > 0; ++i) {
    Sequence& seq = *running[i];
    const int32_t num_tokens = std::min(seq.gap(), budget);
    // Out of blocks: the back of `running` (lowest priority, newest) has not been scheduled this
    // step; preempt it, and if that is this sequence itself, stop.
    bool preempted_self = false;
    while (!blocks_.Allocate(seq.table, seq.num_computed_tokens + num_tokens)) {
      Sequence* victim = running.back();
      running.pop_back();
      Preempt(*victim);
      preempted = true;
      if (victim == &seq) {
        preempted_self = true;
        break;
      }
    }
    if (preempted_self) break;
    AddChunk(plan, seq, num_tokens);
    budget -= num_tokens;
  }
  return preempted;
}

void Scheduler::Preempt(Sequence& seq) {
  VLOG(1) << "preempting request " << seq.request.id << " (" << seq.tokens.size() << " tokens, "
          << seq.table.blocks.size() << " blocks)";
  blocks_.Free(seq.table);
  seq.num_computed_tokens = 0;
  seq.prompt_logprobs.clear();
  seq.status = SequenceStatus::kWaiting;
  ++state_->num_preemptions;
  InsertWaiting(&seq);
}

void Scheduler::AdmitWaiting(StepPlan& plan, int32_t& budget) {
  auto& waiting = state_->waiting;
  while (!waiting.empty() && budget > 0 &&
         static_cast<int32_t>(state_->running.size()) < config_.max_num_seqs) {
    Sequence& seq = *waiting.front();
    // Never the whole sequence from the cache: its last token is computed so logits exist.
    // Prompt logprobs need every prompt position's logits: no cache (vLLM skips it too).
    const absl::Span<const int32_t> known(seq.tokens);
    const std::vector<BlockId> hit = seq.prompt_logprobs_pending
                                         ? std::vector<BlockId>()
                                         : blocks_.FindCachedPrefix(known.first(known.size() - 1));
    const int32_t num_hit_tokens = static_cast<int32_t>(hit.size()) * blocks_.block_size();
    const int32_t num_tokens = std::min(seq.gap() - num_hit_tokens, budget);
    if (!blocks_.Allocate(seq.table, num_hit_tokens + num_tokens, hit)) break;
    waiting.pop_front();
    seq.num_computed_tokens = num_hit_tokens;
    if (!seq.num_cached_tokens.has_value()) seq.num_cached_tokens = num_hit_tokens;
    seq.status = SequenceStatus::kRunning;
    seq.admission = state_->num_admissions++;
    InsertRunning(&seq);
    AddChunk(plan, seq, num_tokens);
    if (num_hit_tokens > 0 && seq.request.sampling.NeedsHistory()) {
      plan.chunks.back().context_token_ids.assign(seq.tokens.begin(),
                                                  seq.tokens.begin() + num_hit_tokens);
    }
    budget -= num_tokens;
  }
}

void Scheduler::AddChunk(StepPlan& plan, const Sequence& seq, int32_t num_tokens) const {
  ScheduledChunk& chunk = plan.chunks.emplace_back();
  chunk.request_id = seq.request.id;
  const auto first = seq.tokens.begin() + seq.num_computed_tokens;
  chunk.token_ids.assign(first, first + num_tokens);
  chunk.start_position = seq.num_computed_tokens;
  chunk.block_table = seq.table.blocks;
  chunk.sample = num_tokens == seq.gap();
  chunk.output_index = seq.num_outputs();
  chunk.sampling = seq.request.sampling;
  if (seq.prompt_logprobs_pending) {
    chunk.prompt_logprobs = seq.request.prompt_logprobs;
    const int32_t end = seq.num_computed_tokens + num_tokens;
    if (end < seq.num_prompt_tokens) chunk.next_prompt_token = seq.tokens[end];
  }
}

std::optional<FinishReason> Scheduler::AppendToken(Sequence& seq,
                                                   const SampledToken& sampled) const {
  seq.tokens.push_back(sampled.token_id);
  const bool eos = !seq.request.ignore_eos && Contains(config_.eos_token_ids, sampled.token_id);
  if (eos || Contains(seq.request.stop_token_ids, sampled.token_id)) return FinishReason::kStop;
  if (seq.num_outputs() >= seq.request.max_tokens) return FinishReason::kLength;
  if (static_cast<int32_t>(seq.tokens.size()) >= max_len()) return FinishReason::kLength;
  return std::nullopt;
}

namespace {

Usage UsageOf(int32_t num_prompt, int32_t num_outputs, std::optional<int32_t> num_cached) {
  return Usage{.prompt_tokens = num_prompt,
               .completion_tokens = num_outputs,
               .cached_tokens = num_cached.value_or(0)};
}

RequestOutput FinalOutput(RequestId id, FinishReason reason, Usage usage) {
  RequestOutput out;
  out.id = id;
  out.finish_reason = reason;
  out.usage = usage;
  return out;
}

}  // namespace

std::vector<RequestOutput> Scheduler::Update(const StepPlan& plan, const StepResult& result) {
  std::vector<RequestOutput> outputs;
  outputs.reserve(state_->aborted.size() + result.sampled.size());
  for (Sequence* seq : state_->aborted) {
    outputs.push_back(
        FinalOutput(seq->request.id, FinishReason::kAbort,
                    UsageOf(seq->num_prompt_tokens, seq->num_outputs(), seq->num_cached_tokens)));
    state_->sequences.erase(seq->request.id);
  }
  state_->aborted.clear();

  std::vector<RequestId> finished;
  size_t next_sampled = 0;
  size_t next_prompt_logprobs = 0;
  for (const ScheduledChunk& chunk : plan.chunks) {
    const SampledToken* sampled = nullptr;
    if (chunk.sample) {
      CHECK_LT(next_sampled, result.sampled.size()) << "too few sampled tokens";
      sampled = &result.sampled[next_sampled++];
      CHECK_EQ(sampled->request_id, chunk.request_id) << "sampled tokens out of chunk order";
    }
    const ChunkPromptLogprobs* scores = nullptr;
    if (chunk.prompt_logprobs.has_value()) {
      CHECK_LT(next_prompt_logprobs, result.prompt_logprobs.size()) << "too few prompt logprobs";
      scores = &result.prompt_logprobs[next_prompt_logprobs++];
      CHECK_EQ(scores->request_id, chunk.request_id) << "prompt logprobs out of chunk order";
      CHECK_EQ(static_cast<int32_t>(scores->logprobs.size()), chunk.num_prompt_scores());
    }
    auto it = state_->sequences.find(chunk.request_id);
    if (it == state_->sequences.end()) continue;  // aborted since Schedule
    Sequence& seq = *it->second;
    CHECK(seq.status == SequenceStatus::kRunning) << "request " << seq.request.id;
    CHECK_EQ(chunk.start_position, seq.num_computed_tokens) << "request " << seq.request.id;
    seq.num_computed_tokens += static_cast<int32_t>(chunk.token_ids.size());
    if (scores != nullptr && seq.prompt_logprobs_pending) {
      // Chunks run in position order from 0 (no cache hit), so this chunk's scores follow.
      CHECK_EQ(seq.prompt_logprobs.size(), static_cast<size_t>(chunk.start_position));
      seq.prompt_logprobs.insert(seq.prompt_logprobs.end(), scores->logprobs.begin(),
                                 scores->logprobs.end());
    }
    std::optional<FinishReason> finish;
    if (sampled != nullptr) finish = AppendToken(seq, *sampled);
    blocks_.CacheFullBlocks(seq.table, seq.tokens, seq.num_computed_tokens);
    if (sampled == nullptr) continue;
    RequestOutput& out = outputs.emplace_back();
    out.id = seq.request.id;
    out.token_ids.push_back(sampled->token_id);
    if (seq.prompt_logprobs_pending) {
      seq.prompt_logprobs_pending = false;
      out.prompt_logprobs = std::move(seq.prompt_logprobs);
      seq.prompt_logprobs = {};
    }
    if (seq.request.sampling.logprobs) {
      out.logprobs.push_back(TokenLogprob{.token_id = sampled->token_id,
                                          .logprob = sampled->logprob,
                                          .top = sampled->top_logprobs});
    }
    if (finish.has_value()) {
      out.finish_reason = finish;
      out.usage = UsageOf(seq.num_prompt_tokens, seq.num_outputs(), seq.num_cached_tokens);
      blocks_.Free(seq.table);
      seq.status = SequenceStatus::kFinished;
      finished.push_back(seq.request.id);
    }
  }
  CHECK_EQ(next_sampled, result.sampled.size()) << "too many sampled tokens";
  CHECK_EQ(next_prompt_logprobs, result.prompt_logprobs.size()) << "too many prompt logprobs";
  if (!finished.empty()) {
    std::erase_if(state_->running,
                  [](const Sequence* s) { return s->status == SequenceStatus::kFinished; });
    for (RequestId id : finished) state_->sequences.erase(id);
    state_->finished.insert(state_->finished.end(), finished.begin(), finished.end());
  }
  return outputs;
}

std::vector<RequestOutput> Scheduler::FailAll(const std::string& message) {
  std::vector<RequestOutput> outputs = Update(StepPlan{}, StepResult{});  // pending aborts
  auto fail = [&](Sequence* seq) {
    blocks_.Free(seq->table);
    state_->finished.push_back(seq->request.id);
    outputs.push_back(
        FinalOutput(seq->request.id, FinishReason::kError,
                    UsageOf(seq->num_prompt_tokens, seq->num_outputs(), seq->num_cached_tokens)));
    outputs.back().error = message;
  };
  for (Sequence* seq : state_->running) fail(seq);
  for (Sequence* seq : state_->waiting) fail(seq);
  state_->running.clear();
  state_->waiting.clear();
  state_->sequences.clear();
  return outputs;
}

bool Scheduler::HasWork() const {
  return !state_->running.empty() || !state_->waiting.empty() || !state_->aborted.empty();
}

int32_t Scheduler::num_running() const { return static_cast<int32_t>(state_->running.size()); }

int32_t Scheduler::num_waiting() const { return static_cast<int32_t>(state_->waiting.size()); }

int64_t Scheduler::num_preemptions() const { return state_->num_preemptions; }

}  // namespace kvfold
