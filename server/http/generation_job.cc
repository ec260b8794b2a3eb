#include "server/http/generation_job.h"

#include <algorithm>
#include <mutex>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "glog/logging.h"
#include "server/api/openai_request.h"

namespace kvfold::http {
namespace {

// OpenAI's and vLLM's defaults where the request leaves a field out.
constexpr float kDefaultTemperature = 1.0f;
constexpr int32_t kDefaultCompletionMaxTokens = 16;

std::string ResponseId(JobKind kind) {
  return absl::StrFormat("%s-%016x", kind == JobKind::kChat ? "chatcmpl" : "cmpl",
                         serving::RandomSeed());
}

api::ApiError ServerError(std::string message) {
  return api::ApiError{.http_status = 500, .type = "server_error", .message = std::move(message)};
}

// The checks both endpoints share, before any prompt is looked at.
std::optional<api::ApiError> CheckCommon(const api::CommonFields& r,
                                         const serving::ServedModel& model) {
  if (r.model != model.name) return ModelNotFound(r.model);
  LogUnknownFieldsOnce(r.unknown_fields);
  return std::nullopt;
}

}  // namespace

api::ApiError ModelNotFound(std::string_view name) {
  return api::ApiError{
      .http_status = 404,
      .type = "not_found_error",
      .message = absl::StrCat("The model `", std::string(name), "` does not exist."),
      .param = "model"};
}

void LogUnknownFieldsOnce(const std::vector<std::string>& names) {
  static std::mutex mu;
  static auto* seen = new absl::flat_hash_set<std::string>();
  std::lock_guard<std::mutex> lock(mu);
  for (const std::string& name : names) {
    if (seen->size() < 1024 && seen->insert(name).second) {
      LOG(WARNING) << "ignoring unknown request field '" << name
                   << "' (logged once per field name)";
    }
  }
}

GenerationJob::GenerationJob(JobKind kind, const serving::ServedModel& model)
    : kind_(kind), model_(model) {
  header_.id = ResponseId(kind);
  header_.created = absl::ToUnixSeconds(absl::Now());
  header_.model = model.name;
}

api::ApiOr<std::unique_ptr<GenerationJob>> GenerationJob::Create(
    JobKind kind, std::string_view body, const serving::ServedModel& model) {
  std::unique_ptr<GenerationJob> job(new GenerationJob(kind, model));
  const Tokenizer& tokenizer = *model.tokenizer;
  const int32_t max_model_len = model.engine->max_model_len();
  api::RequestLimits limits;
  limits.max_n = model.max_n;

  // Each prompt's token ids and echo text, and the fields every choice shares.
  struct PromptIds {
    std::vector<int32_t> ids;
    std::string echo;
    int32_t max_tokens = 0;
  };
  std::vector<PromptIds> prompts;
  const api::CommonFields* common = nullptr;
  std::optional<api::CompletionRequest> completion;
  std::optional<api::ChatRequest> chat;

  if (kind == JobKind::kCompletion) {
    api::ApiOr<api::CompletionRequest> r = api::ParseCompletionRequest(body, limits);
    if (!r.ok()) return r.error();
    completion = std::move(*r);
    common = &*completion;
    if (auto e = CheckCommon(*common, model)) return *e;
    for (size_t p = 0; p < completion->prompts.size(); ++p) {
      const api::Prompt& prompt = completion->prompts[p];
      PromptIds out;
      if (prompt.is_tokens) {
        out.ids = prompt.token_ids;
        for (int32_t id : out.ids) {
          if (id < 0 || id >= model.engine->vocab_size()) {
            return api::InvalidRequest(
                absl::StrCat("token id ", id, " is outside the vocabulary [0, ",
                             model.engine->vocab_size(), ")"),
                "prompt");
          }
        }
        if (completion->echo) {
          absl::StatusOr<std::string> text = tokenizer.Decode(out.ids, true);
          if (!text.ok())
            return api::InvalidRequest(std::string(text.status().message()), "prompt");
          out.echo = *text;
        }
      } else {
        absl::StatusOr<std::vector<int32_t>> ids = tokenizer.Encode(prompt.text, true);
        if (!ids.ok()) return api::InvalidRequest(std::string(ids.status().message()), "prompt");
        out.ids = *std::move(ids);
        if (completion->echo) out.echo = prompt.text;
      }
      if (out.ids.empty()) return api::InvalidRequest("the prompt is empty", "prompt");
      api::ApiOr<int32_t> max_tokens = api::CheckContextLength(
          static_cast<int64_t>(out.ids.size()),
          completion->sampling.max_tokens.value_or(kDefaultCompletionMaxTokens), max_model_len,
          "prompt");
      if (!max_tokens.ok()) return max_tokens.error();
      out.max_tokens = *max_tokens;
      prompts.push_back(std::move(out));
    }
  } else {
    api::ApiOr<api::ChatRequest> r = api::ParseChatRequest(body, limits);
    if (!r.ok()) return r.error();
    chat = std::move(*r);
    common = &*chat;
    if (auto e = CheckCommon(*common, model)) return *e;
    if (model.chat == nullptr) {
      return api::InvalidRequest(
          "this model has no chat template; start the server with --chat-template FILE",
          "messages");
    }
    absl::StatusOr<std::string> text = model.chat->Render(chat->messages);
    if (!text.ok()) return api::InvalidRequest(std::string(text.status().message()), "messages");
    if (model.log_prompts) LOG(INFO) << "chat prompt: " << *text;
    absl::StatusOr<std::vector<int32_t>> ids = tokenizer.Encode(*text, false);
    if (!ids.ok()) return api::InvalidRequest(std::string(ids.status().message()), "messages");
    PromptIds out;
    out.ids = *std::move(ids);
    if (out.ids.empty()) return api::InvalidRequest("the conversation is empty", "messages");
    api::ApiOr<int32_t> max_tokens = api::CheckContextLength(
        static_cast<int64_t>(out.ids.size()), chat->sampling.max_tokens, max_model_len, "messages");
    if (!max_tokens.ok()) return max_tokens.error();
    out.max_tokens = *max_tokens;
    prompts.push_back(std::move(out));
  }

  job->stream_ = common->stream;
  job->include_usage_ = common->include_usage;
  SamplingParams defaults;
  defaults.temperature = kDefaultTemperature;
  const SamplingParams sampling = api::ToSamplingParams(common->sampling, defaults);
  job->logprobs_ = sampling.logprobs;
  job->top_logprobs_ = sampling.top_logprobs;
  job->prompt_logprobs_ = common->prompt_logprobs;
  // OpenAI's echo with logprobs scores the prompt too (vLLM asks the engine for prompt logprobs).
  job->echo_logprobs_ = completion.has_value() && completion->echo && sampling.logprobs;
  std::optional<int32_t> engine_prompt_logprobs = job->prompt_logprobs_;
  if (job->echo_logprobs_) {
    engine_prompt_logprobs = std::max(engine_prompt_logprobs.value_or(0), sampling.top_logprobs);
    for (const PromptIds& p : prompts) job->prompt_ids_.push_back(p.ids);
  }
  for (size_t p = 0; p < prompts.size(); ++p) {
    if (model.log_prompts && kind == JobKind::kCompletion) {
      LOG(INFO) << "prompt " << p << ": " << completion->prompts[p].text;
    }
    for (int32_t i = 0; i < common->n; ++i) {
      serving::GenerationRequest g;
      g.prompt_token_ids = prompts[p].ids;
      g.sampling = sampling;
      g.sampling.seed = common->sampling.seed.has_value()
                            ? *common->sampling.seed + static_cast<uint64_t>(i)
                            : serving::RandomSeed();
      g.max_tokens = prompts[p].max_tokens;
      g.stop = common->sampling.stop;
      g.stop_token_ids = common->sampling.stop_token_ids;
      g.ignore_eos = common->sampling.ignore_eos.value_or(false);
      g.prompt_logprobs = engine_prompt_logprobs;
      job->requests_.push_back(std::move(g));
      Choice c;
      c.prompt = p;
      c.echo = prompts[p].echo;
      c.text_offset = static_cast<int32_t>(c.echo.size());
      job->choices_.push_back(std::move(c));
    }
  }
  return job;
}

std::string GenerationJob::TokenText(int32_t id) const {
  absl::StatusOr<std::string> text = model_.tokenizer->Decode({id}, false);
  return text.ok() ? *text : std::string();
}

api::PromptLogprobs GenerationJob::PromptLogprobTexts(
    const std::vector<TokenLogprob>& scores) const {
  const size_t top = static_cast<size_t>(prompt_logprobs_.value_or(0));
  api::PromptLogprobs out;
  out.reserve(scores.size());
  for (const TokenLogprob& score : scores) {
    // The token itself, then its alternatives (rank i + 1), each id once (vLLM's dict).
    std::vector<api::PromptTokenAlternative>& entry = out.emplace_back();
    entry.push_back({.token_id = score.token_id,
                     .logprob = score.logprob,
                     .rank = score.rank,
                     .decoded_token = TokenText(score.token_id)});
    for (size_t i = 0; i < std::min(top, score.top.size()); ++i) {
      const auto& [id, logprob] = score.top[i];
      if (id == score.token_id) continue;
      entry.push_back({.token_id = id,
                       .logprob = logprob,
                       .rank = static_cast<int32_t>(i + 1),
                       .decoded_token = TokenText(id)});
    }
  }
  return out;
}

std::vector<api::TokenLogprobText> GenerationJob::EchoLogprobTexts(
    const Choice& c, const std::vector<TokenLogprob>& scores) const {
  const std::vector<int32_t>& ids = prompt_ids_[c.prompt];
  std::vector<api::TokenLogprobText> out;
  int32_t offset = 0;
  for (size_t i = 0; i < ids.size(); ++i) {
    api::TokenLogprobText t;
    t.token = TokenText(ids[i]);
    t.text_offset = offset;
    offset += static_cast<int32_t>(t.token.size());
    if (i == 0 || i - 1 >= scores.size()) {
      t.no_logprob = true;
    } else {
      const TokenLogprob& score = scores[i - 1];
      t.logprob = score.logprob;
      const size_t top = std::min(score.top.size(), static_cast<size_t>(top_logprobs_));
      for (size_t k = 0; k < top; ++k)
        t.top.emplace_back(TokenText(score.top[k].first), score.top[k].second);
    }
    out.push_back(std::move(t));
  }
  return out;
}

std::vector<api::TokenLogprobText> GenerationJob::LogprobTexts(
    Choice& c, const std::vector<TokenLogprob>& logprobs) const {
  auto token_text = [this](int32_t id) { return TokenText(id); };
  std::vector<api::TokenLogprobText> out;
  out.reserve(logprobs.size());
  for (const TokenLogprob& lp : logprobs) {
    api::TokenLogprobText t;
    t.token = token_text(lp.token_id);
    t.logprob = lp.logprob;
    for (const auto& [id, value] : lp.top) t.top.emplace_back(token_text(id), value);
    t.text_offset = c.text_offset;
    c.text_offset += static_cast<int32_t>(t.token.size());
    out.push_back(std::move(t));
  }
  return out;
}

std::string GenerationJob::StreamStart() {
  std::string out;
  for (size_t i = 0; i < choices_.size(); ++i) {
    if (kind_ == JobKind::kChat) {
      api::ChatChoice c;
      c.index = static_cast<int32_t>(i);
      c.role = "assistant";
      out += api::SseEvent(api::ChatChunkJson(header_, {c}, nullptr, include_usage_));
    } else if (!choices_[i].echo.empty()) {
      api::CompletionChoice c;
      c.index = static_cast<int32_t>(i);
      c.text = choices_[i].echo;
      out += api::SseEvent(api::CompletionJson(header_, {c}, nullptr, include_usage_));
    }
  }
  return out;
}

std::string GenerationJob::OnDelta(size_t index, serving::GenerationDelta delta) {
  Choice& c = choices_[index];
  if (c.finish_reason.has_value()) return "";  // defensive: nothing follows the last delta
  std::vector<api::TokenLogprobText> logprobs;
  std::optional<api::PromptLogprobs> prompt_logprobs;
  if (!c.prompt_logprobs.has_value() &&
      (!delta.prompt_logprobs.empty() || !delta.token_ids.empty())) {
    // The engine sends them with the first token (none when the prompt is one token long).
    if (prompt_logprobs_.has_value()) prompt_logprobs = PromptLogprobTexts(delta.prompt_logprobs);
    if (echo_logprobs_) logprobs = EchoLogprobTexts(c, delta.prompt_logprobs);
    c.prompt_logprobs = prompt_logprobs.value_or(api::PromptLogprobs());
  }
  if (logprobs_) {
    for (auto& lp : LogprobTexts(c, delta.logprobs)) logprobs.push_back(std::move(lp));
  }
  const bool last = delta.finish_reason.has_value();
  if (last) {
    c.finish_reason = delta.finish_reason;
    c.usage = delta.usage;
    c.error = delta.error;
    ++num_finished_;
  }
  if (!stream_) {
    c.text += delta.text;
    for (auto& lp : logprobs) c.logprobs.push_back(std::move(lp));
    return "";
  }
  if (last && *delta.finish_reason == "error") {
    return api::SseEvent(
        api::ErrorBody(ServerError(delta.error.empty() ? "the generation failed" : delta.error)));
  }
  if (!last && delta.text.empty() && logprobs.empty() && !prompt_logprobs.has_value()) return "";
  const int32_t i = static_cast<int32_t>(index);
  std::optional<std::vector<api::TokenLogprobText>> lp;
  if (logprobs_) lp = std::move(logprobs);
  if (kind_ == JobKind::kChat) {
    api::ChatChoice chunk{.index = i, .content = std::move(delta.text)};
    chunk.finish_reason = delta.finish_reason;
    chunk.logprobs = std::move(lp);
    chunk.prompt_logprobs = std::move(prompt_logprobs);
    return api::SseEvent(api::ChatChunkJson(header_, {chunk}, nullptr, include_usage_));
  }
  api::CompletionChoice chunk{.index = i, .text = std::move(delta.text)};
  chunk.finish_reason = delta.finish_reason;
  chunk.logprobs = std::move(lp);
  chunk.prompt_logprobs = std::move(prompt_logprobs);
  return api::SseEvent(api::CompletionJson(header_, {chunk}, nullptr, include_usage_));
}

Usage GenerationJob::TotalUsage() const {
  Usage total;
  for (size_t i = 0; i < choices_.size(); ++i) {
    const Choice& c = choices_[i];
    total.completion_tokens += c.usage.completion_tokens;
    // The prompt is counted once however many choices continue it (n > 1).
    if (i == 0 || choices_[i - 1].prompt != c.prompt) {
      total.prompt_tokens += c.usage.prompt_tokens;
      total.cached_tokens += c.usage.cached_tokens;
    }
  }
  return total;
}

std::string GenerationJob::Finish(int* status) {
  *status = 200;
  const Usage usage = TotalUsage();
  if (stream_) {
    std::string out;
    if (include_usage_) {
      out +=
          api::SseEvent(kind_ == JobKind::kChat ? api::ChatChunkJson(header_, {}, &usage, true)
                                                : api::CompletionJson(header_, {}, &usage, true));
    }
    return out + api::SseDone();
  }
  for (const Choice& c : choices_) {
    if (c.finish_reason == "error") {
      *status = 500;
      return api::ErrorBody(ServerError(c.error.empty() ? "the generation failed" : c.error));
    }
  }
  if (kind_ == JobKind::kChat) {
    std::vector<api::ChatChoice> out;
    for (size_t i = 0; i < choices_.size(); ++i) {
      api::ChatChoice c{.index = static_cast<int32_t>(i), .content = choices_[i].text};
      c.finish_reason = choices_[i].finish_reason;
      if (logprobs_) c.logprobs = choices_[i].logprobs;
      if (prompt_logprobs_.has_value()) c.prompt_logprobs = choices_[i].prompt_logprobs;
      out.push_back(std::move(c));
    }
    return api::ChatCompletionJson(header_, out, usage);
  }
  std::vector<api::CompletionChoice> out;
  for (size_t i = 0; i < choices_.size(); ++i) {
    api::CompletionChoice c{.index = static_cast<int32_t>(i),
                            .text = choices_[i].echo + choices_[i].text};
    c.finish_reason = choices_[i].finish_reason;
    if (logprobs_) c.logprobs = choices_[i].logprobs;
    if (prompt_logprobs_.has_value()) c.prompt_logprobs = choices_[i].prompt_logprobs;
    out.push_back(std::move(c));
  }
  return api::CompletionJson(header_, out, &usage);
}

}  // namespace kvfold::http
