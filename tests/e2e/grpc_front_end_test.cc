// The gRPC front end on a real port over a real ServingEngine (stories260K), driven through the
// generated C++ stub: streams equal what the engine produces directly, errors carry the right
// codes, cancellation frees the KV cache, and the health service follows SetServing.
#include "server/grpc/grpc_front_end.h"

#include <condition_variable>
#include <fstream>
#include <future>
#include <mutex>
#include <sstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "kernels/cpu/cpu_ops.h"
#include "kvfold/v1/kvfold.grpc.pb.h"
#include "server/serving/chat_prompt.h"
#include "server/serving/served_model.h"
#include "tests/testing/model_fixtures.h"
#include "tests/testing/paths.h"
#include "tests/testing/stories_fixture.h"

namespace kvfold::rpc {
namespace {

using ::testing::HasSubstr;

constexpr int32_t kMaxModelLen = 256;

// A generation's deltas straight from the engine: the reference for what the stream carries.
class Collector {
 public:
  serving::DeltaCallback Callback() {
    return [this](serving::GenerationDelta d) {
      std::lock_guard<std::mutex> lock(mu_);
      if (d.finish_reason.has_value()) done_ = true;
      for (int32_t id : d.token_ids) tokens_.push_back(id);
      text_ += d.text;
      prompt_logprobs_.insert(prompt_logprobs_.end(), d.prompt_logprobs.begin(),
                              d.prompt_logprobs.end());
      cv_.notify_all();
    };
  }
  void Wait() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [this] { return done_; });
  }
  std::string text() {
    Wait();
    return text_;
  }
  std::vector<int32_t> tokens() {
    Wait();
    return tokens_;
  }
  std::vector<TokenLogprob> prompt_logprobs() {
    Wait();
    return prompt_logprobs_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  std::string text_;
  std::vector<int32_t> tokens_;
  std::vector<TokenLogprob> prompt_logprobs_;
};

// A whole Generate/Chat stream as the client saw it.
struct Stream {
  std::vector<v1::GenerateResponse> responses;
  grpc::Status status;

  std::string Text() const {
    std::string text;
    for (const auto& r : responses) text += r.text();
    return text;
  }
  std::vector<int32_t> Tokens() const {
    std::vector<int32_t> ids;
    for (const auto& r : responses)
      ids.insert(ids.end(), r.token_ids().begin(), r.token_ids().end());
    return ids;
  }
};

Stream ReadAll(grpc::ClientReaderInterface<v1::GenerateResponse>& reader) {
  Stream s;
  v1::GenerateResponse r;
  while (reader.Read(&r)) s.responses.push_back(r);
  s.status = reader.Finish();
  return s;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Waits (up to 10 s) for `done`.
template <typename F>
bool Eventually(F done) {
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (!done()) {
    if (absl::Now() > deadline) return false;
    absl::SleepFor(absl::Milliseconds(5));
  }
  return true;
}

class GrpcFrontEndTest : public testing::StoriesFixture {
 protected:
  void SetUp() override {
    testing::StoriesFixture::SetUp();
    if (HasFatalFailure()) return;
    absl::StatusOr<serving::ChatPrompt> chat = serving::ChatPrompt::FromSource(
        ReadFile(testing::SourcePath("tests/fixtures/chat/templates/llama2.jinja")), "<s>", "</s>");
    ASSERT_TRUE(chat.ok()) << chat.status();
    chat_ = std::make_unique<serving::ChatPrompt>(*std::move(chat));
  }

  void TearDown() override {
    // The front end first: streams still waiting on the engine end with its last deltas.
    if (front_ != nullptr) front_->Shutdown(absl::Seconds(1));
    front_.reset();
    engine_.reset();
  }

  // Starts the engine and the front end on an ephemeral port, and a stub connected to it.
  void Serve(serving::ServingOptions options = {}, std::string api_key = "",
             bool with_chat = true) {
    CacheConfig cache;
    cache.memory_bytes = int64_t{4} << 20;
    cache.kv_dtype = DType::kF32;
    SchedulerConfig scheduler;
    scheduler.max_model_len = kMaxModelLen;
    scheduler.eos_token_ids = model_->config().eos_token_ids;
    absl::StatusOr<std::unique_ptr<serving::ServingEngine>> engine =
        serving::ServingEngine::Create(*model_, *ops_, *tokenizer_, cache, scheduler, options);
    ASSERT_TRUE(engine.ok()) << engine.status();
    engine_ = *std::move(engine);
    served_.name = "stories260K";
    served_.path = testing::SourcePath("models/stories260K");
    served_.created = 1700000000;
    served_.engine = engine_.get();
    served_.tokenizer = tokenizer_.get();
    served_.chat = with_chat ? chat_.get() : nullptr;
    served_.api_key = std::move(api_key);
    absl::StatusOr<std::unique_ptr<GrpcFrontEnd>> front =
        GrpcFrontEnd::Start(served_, "127.0.0.1", 0);
    ASSERT_TRUE(front.ok()) << front.status();
    front_ = *std::move(front);
    ASSERT_GT(front_->port(), 0);
    channel_ = grpc::CreateChannel(absl::StrCat("127.0.0.1:", front_->port()),
                                   grpc::InsecureChannelCredentials());
    stub_ = v1::KvFold::NewStub(channel_);
  }

  serving::GenerationRequest Greedy(std::vector<int32_t> prompt, int32_t max_tokens) {
    serving::GenerationRequest r;
    r.prompt_token_ids = std::move(prompt);
    r.max_tokens = max_tokens;
    r.ignore_eos = true;
    return r;
  }

  v1::GenerateRequest GreedyText(const std::string& text, int32_t max_tokens) {
    v1::GenerateRequest r;
    r.set_text(text);
    r.mutable_sampling()->set_temperature(0);
    r.mutable_sampling()->set_max_tokens(max_tokens);
    r.mutable_sampling()->set_ignore_eos(true);
    return r;
  }

  Stream Generate(const v1::GenerateRequest& request, const std::string& api_key = "") {
    grpc::ClientContext context;
    if (!api_key.empty()) context.AddMetadata("authorization", "Bearer " + api_key);
    auto reader = stub_->Generate(&context, request);
    return ReadAll(*reader);
  }

  Stream Chat(const v1::ChatRequest& request) {
    grpc::ClientContext context;
    auto reader = stub_->Chat(&context, request);
    return ReadAll(*reader);
  }

  std::vector<int32_t> Encode(const std::string& text, bool add_special = true) {
    absl::StatusOr<std::vector<int32_t>> ids = tokenizer_->Encode(text, add_special);
    EXPECT_TRUE(ids.ok()) << ids.status();
    return ids.ok() ? *ids : std::vector<int32_t>{};
  }

  // grpc.health.v1.Health/Check by hand on the wire: HealthCheckRequest{service = 1} and
  // HealthCheckResponse{status = 1: SERVING = 1, NOT_SERVING = 2}.
  int HealthStatus(const std::string& service) {
    std::string request;
    if (!service.empty()) {
      request.push_back(0x0a);
      request.push_back(static_cast<char>(service.size()));
      request += service;
    }
    grpc::Slice slice(request);
    grpc::ByteBuffer request_buffer(&slice, 1);
    grpc::ByteBuffer response_buffer;
    grpc::GenericStub generic(channel_);
    grpc::ClientContext context;
    std::promise<grpc::Status> done;
    generic.UnaryCall(&context, "/grpc.health.v1.Health/Check", grpc::StubOptions(),
                      &request_buffer, &response_buffer,
                      [&done](grpc::Status s) { done.set_value(std::move(s)); });
    const grpc::Status status = done.get_future().get();
    if (!status.ok()) return -static_cast<int>(status.error_code());
    std::vector<grpc::Slice> slices;
    EXPECT_TRUE(response_buffer.Dump(&slices).ok());
    std::string bytes;
    for (const grpc::Slice& s : slices)
      bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
    if (bytes.size() != 2 || bytes[0] != 0x08) return -100;
    return bytes[1];
  }

  std::unique_ptr<serving::ChatPrompt> chat_;
  std::unique_ptr<serving::ServingEngine> engine_;
  serving::ServedModel served_;
  std::unique_ptr<GrpcFrontEnd> front_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::KvFold::Stub> stub_;
};

TEST_F(GrpcFrontEndTest, GenerateStreamsWhatTheEngineDecodes) {
  Serve();
  const std::vector<int32_t> prompt = Encode("Once upon a time");
  Collector direct;
  ASSERT_TRUE(engine_->Submit(Greedy(prompt, 40), direct.Callback()).ok());

  const Stream s = Generate(GreedyText("Once upon a time", 40));
  ASSERT_TRUE(s.status.ok()) << s.status.error_message();
  ASSERT_GE(s.responses.size(), 2u);
  EXPECT_EQ(s.Text(), direct.text());
  EXPECT_EQ(s.Tokens(), direct.tokens());
  EXPECT_EQ(s.Tokens().size(), 40u);
  for (size_t i = 0; i + 1 < s.responses.size(); ++i) {
    EXPECT_EQ(s.responses[i].finish_reason(), v1::FINISH_REASON_UNSPECIFIED);
  }
  const v1::GenerateResponse& last = s.responses.back();
  EXPECT_EQ(last.finish_reason(), v1::FINISH_REASON_LENGTH);
  EXPECT_EQ(last.usage().prompt_tokens(), static_cast<int32_t>(prompt.size()));
  EXPECT_EQ(last.usage().completion_tokens(), 40);

  // The same prompt as token ids gives the same stream.
  v1::GenerateRequest by_ids = GreedyText("", 40);
  by_ids.mutable_token_ids()->mutable_ids()->Add(prompt.begin(), prompt.end());
  const Stream t = Generate(by_ids);
  ASSERT_TRUE(t.status.ok()) << t.status.error_message();
  EXPECT_EQ(t.Text(), s.Text());
  // Its prompt is now in the prefix cache, whole blocks of it.
  EXPECT_GE(t.responses.back().usage().cached_tokens(), 0);
}

TEST_F(GrpcFrontEndTest, StopStringEndsTheStreamAndNeverAppears) {
  Serve();
  const Stream plain = Generate(GreedyText("Once upon a time", 60));
  ASSERT_TRUE(plain.status.ok());
  const std::string text = plain.Text();
  ASSERT_GT(text.size(), 30u);
  const std::string stop = text.substr(text.size() / 2, 6);
  v1::GenerateRequest r = GreedyText("Once upon a time", 60);
  r.mutable_sampling()->add_stop(stop);
  const Stream s = Generate(r);
  ASSERT_TRUE(s.status.ok());
  EXPECT_EQ(s.Text(), text.substr(0, text.find(stop)));
  EXPECT_EQ(s.responses.back().finish_reason(), v1::FINISH_REASON_STOP);
}

TEST_F(GrpcFrontEndTest, LogprobsOfGreedyTokensAreTheirTopAlternative) {
  Serve();
  v1::GenerateRequest r = GreedyText("Once upon a time", 12);
  r.mutable_sampling()->set_logprobs(true);
  r.mutable_sampling()->set_top_logprobs(3);
  const Stream s = Generate(r);
  ASSERT_TRUE(s.status.ok()) << s.status.error_message();
  int seen = 0;
  for (const v1::GenerateResponse& response : s.responses) {
    ASSERT_EQ(response.logprobs_size(), response.token_ids_size());
    for (int i = 0; i < response.logprobs_size(); ++i, ++seen) {
      const v1::TokenLogprob& lp = response.logprobs(i);
      EXPECT_EQ(lp.token_id(), response.token_ids(i));
      EXPECT_LE(lp.logprob(), 0.0f);
      ASSERT_EQ(lp.top_logprobs_size(), 3);
      // Greedy picks the most likely token.
      EXPECT_EQ(lp.top_logprobs(0).token_id(), lp.token_id());
      EXPECT_FLOAT_EQ(lp.top_logprobs(0).logprob(), lp.logprob());
      EXPECT_GE(lp.top_logprobs(0).logprob(), lp.top_logprobs(1).logprob());
      EXPECT_EQ(lp.token(), *tokenizer_->Decode({lp.token_id()}, false));
    }
  }
  EXPECT_EQ(seen, 12);
}

TEST_F(GrpcFrontEndTest, PromptLogprobsComeOnceWithTheFirstTokens) {
  Serve();
  const std::vector<int32_t> prompt = Encode("Once upon a time there was");
  serving::GenerationRequest direct_request = Greedy(prompt, 6);
  direct_request.prompt_logprobs = 2;
  Collector direct;
  ASSERT_TRUE(engine_->Submit(direct_request, direct.Callback()).ok());
  const std::vector<TokenLogprob> expected = direct.prompt_logprobs();

  v1::GenerateRequest r = GreedyText("Once upon a time there was", 6);
  r.mutable_sampling()->set_prompt_logprobs(2);
  const Stream s = Generate(r);
  ASSERT_TRUE(s.status.ok()) << s.status.error_message();
  int with_prompt_logprobs = 0;
  bool seen_tokens = false;
  for (const v1::GenerateResponse& response : s.responses) {
    if (response.prompt_logprobs_size() > 0) {
      ++with_prompt_logprobs;
      EXPECT_FALSE(seen_tokens) << "after the first tokens";
      EXPECT_GT(response.token_ids_size(), 0);
    }
    seen_tokens = seen_tokens || response.token_ids_size() > 0;
  }
  EXPECT_EQ(with_prompt_logprobs, 1);
  const v1::GenerateResponse& first = s.responses.front();
  // One per prompt token after the first, the same as the engine's.
  ASSERT_EQ(first.prompt_logprobs_size(), static_cast<int>(prompt.size()) - 1);
  ASSERT_EQ(expected.size(), prompt.size() - 1);
  for (int i = 0; i < first.prompt_logprobs_size(); ++i) {
    const v1::TokenLogprob& lp = first.prompt_logprobs(i);
    EXPECT_EQ(lp.token_id(), prompt[i + 1]);
    EXPECT_EQ(lp.token(), *tokenizer_->Decode({lp.token_id()}, false));
    EXPECT_LE(lp.logprob(), 0.0f);
    EXPECT_GE(lp.rank(), 1);
    ASSERT_EQ(lp.top_logprobs_size(), 2);
    EXPECT_GE(lp.top_logprobs(0).logprob(), lp.top_logprobs(1).logprob());
    if (lp.rank() == 1) {
      EXPECT_EQ(lp.top_logprobs(0).token_id(), lp.token_id());
    }
    if (lp.rank() > 2) {
      EXPECT_LT(lp.logprob(), lp.top_logprobs(1).logprob());
    }
    EXPECT_FLOAT_EQ(lp.logprob(), expected[i].logprob);
    EXPECT_EQ(lp.rank(), expected[i].rank);
  }
  // Without the field, none.
  const Stream plain = Generate(GreedyText("Once upon a time there was", 6));
  ASSERT_TRUE(plain.status.ok());
  for (const v1::GenerateResponse& response : plain.responses) {
    EXPECT_EQ(response.prompt_logprobs_size(), 0);
  }
}

TEST_F(GrpcFrontEndTest, ChatRendersTheTemplateAndGenerates) {
  Serve();
  // Llama 2's template around one user turn (as transformers renders it).
  const std::vector<int32_t> prompt = Encode("<s>[INST] Hello there [/INST]", false);
  Collector direct;
  ASSERT_TRUE(engine_->Submit(Greedy(prompt, 20), direct.Callback()).ok());

  v1::ChatRequest r;
  v1::ChatMessage* m = r.add_messages();
  m->set_role("user");
  m->set_content("Hello there");
  r.mutable_sampling()->set_temperature(0);
  r.mutable_sampling()->set_max_tokens(20);
  r.mutable_sampling()->set_ignore_eos(true);
  const Stream s = Chat(r);
  ASSERT_TRUE(s.status.ok()) << s.status.error_message();
  EXPECT_EQ(s.Text(), direct.text());
  EXPECT_EQ(s.responses.back().usage().prompt_tokens(), static_cast<int32_t>(prompt.size()));

  // Roles that do not alternate: the template refuses.
  r.add_messages()->CopyFrom(*m);
  const Stream bad = Chat(r);
  EXPECT_EQ(bad.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_TRUE(bad.responses.empty());
}

TEST_F(GrpcFrontEndTest, ChatWithoutATemplateIsAFailedPrecondition) {
  Serve({}, "", /*with_chat=*/false);
  v1::ChatRequest r;
  r.add_messages()->set_content("hi");
  const Stream s = Chat(r);
  EXPECT_EQ(s.status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(s.status.error_message(), HasSubstr("chat template"));
}

TEST_F(GrpcFrontEndTest, TokenizeAndDetokenizeRoundTrip) {
  Serve();
  grpc::ClientContext c1;
  v1::TokenizeRequest tr;
  tr.set_text("Once upon a time");
  v1::TokenizeResponse tokens;
  ASSERT_TRUE(stub_->Tokenize(&c1, tr, &tokens).ok());
  const std::vector<int32_t> ids(tokens.token_ids().begin(), tokens.token_ids().end());
  EXPECT_EQ(ids, Encode("Once upon a time"));
  EXPECT_EQ(ids.front(), *tokenizer_->bos_id());
  EXPECT_EQ(tokens.max_model_len(), kMaxModelLen);

  grpc::ClientContext c2;
  v1::DetokenizeRequest dr;
  dr.mutable_token_ids()->CopyFrom(tokens.token_ids());
  v1::DetokenizeResponse text;
  ASSERT_TRUE(stub_->Detokenize(&c2, dr, &text).ok());
  EXPECT_EQ(text.text(), "Once upon a time");

  grpc::ClientContext c3;
  tr.set_add_special_tokens(false);
  ASSERT_TRUE(stub_->Tokenize(&c3, tr, &tokens).ok());
  EXPECT_EQ(tokens.token_ids_size(), static_cast<int>(ids.size()) - 1);

  grpc::ClientContext c4;
  dr.add_token_ids(model_->config().vocab_size);
  const grpc::Status bad = stub_->Detokenize(&c4, dr, &text);
  EXPECT_EQ(bad.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(bad.error_message(), HasSubstr("outside the vocabulary"));
}

TEST_F(GrpcFrontEndTest, ModelsAndModelInfoDescribeTheServedModel) {
  Serve();
  grpc::ClientContext c1;
  v1::ListModelsResponse models;
  ASSERT_TRUE(stub_->ListModels(&c1, v1::ListModelsRequest(), &models).ok());
  ASSERT_EQ(models.models_size(), 1);
  EXPECT_EQ(models.models(0).id(), "stories260K");
  EXPECT_EQ(models.models(0).created(), 1700000000);

  grpc::ClientContext c2;
  v1::ModelInfo info;
  ASSERT_TRUE(stub_->GetModelInfo(&c2, v1::GetModelInfoRequest(), &info).ok());
  const ModelConfig& config = model_->config();
  EXPECT_EQ(info.name(), "stories260K");
  EXPECT_EQ(info.max_model_len(), kMaxModelLen);
  EXPECT_EQ(info.vocab_size(), config.vocab_size);
  EXPECT_TRUE(info.has_chat_template());
  // Unfolded F32 KV: K and V, every layer, every KV head.
  const uint64_t per_token =
      uint64_t{2} * config.num_layers * config.num_kv_heads * config.head_dim * sizeof(float);
  EXPECT_EQ(info.kv_pool().unfolded_bytes_per_token(), per_token);
  EXPECT_EQ(info.kv_pool().bytes_per_token(), per_token);  // no attention plan
  EXPECT_EQ(info.kv_pool().kv_dtype(), "F32");
  EXPECT_EQ(info.kv_pool().num_blocks(), engine_->Stats().num_blocks);
  EXPECT_EQ(info.kv_pool().free_blocks(), info.kv_pool().num_blocks());  // nothing running
  EXPECT_EQ(info.live_requests(), 0);
  EXPECT_EQ(info.kv_pool().capacity_tokens(),
            int64_t{info.kv_pool().num_blocks()} * info.kv_pool().block_size());

  grpc::ClientContext c3;
  v1::GetModelInfoRequest other;
  other.set_model("gpt-4");
  const grpc::Status missing = stub_->GetModelInfo(&c3, other, &info);
  EXPECT_EQ(missing.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(missing.error_message(), HasSubstr("gpt-4"));
}

TEST_F(GrpcFrontEndTest, CancellingTheCallAbortsTheGenerationAndFreesItsBlocks) {
  Serve();
  v1::GenerateRequest r = GreedyText("Once upon a time", kMaxModelLen - 10);
  grpc::ClientContext context;
  auto reader = stub_->Generate(&context, r);
  v1::GenerateResponse first;
  ASSERT_TRUE(reader->Read(&first));
  context.TryCancel();
  while (reader->Read(&first)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_TRUE(Eventually([&] { return engine_->num_live() == 0; }));
  EXPECT_TRUE(Eventually([&] {
    const EngineStats stats = engine_->Stats();
    return stats.num_free_blocks == stats.num_blocks;
  }));
  // The server goes on serving.
  EXPECT_TRUE(Generate(GreedyText("Hello", 4)).status.ok());
}

TEST_F(GrpcFrontEndTest, ShutdownEndsOpenStreamsAndFreesTheirBlocks) {
  Serve();
  grpc::ClientContext context;
  auto reader = stub_->Generate(&context, GreedyText("Once upon a time", kMaxModelLen - 10));
  v1::GenerateResponse first;
  ASSERT_TRUE(reader->Read(&first));
  front_->Shutdown(absl::ZeroDuration());
  while (reader->Read(&first)) {
  }
  const grpc::Status status = reader->Finish();
  // Either it ended in time with its last response, or the shutdown cut it off (the client sees
  // the cancellation, or the connection going away).
  if (!status.ok()) {
    EXPECT_THAT(status.error_code(),
                ::testing::AnyOf(grpc::StatusCode::CANCELLED, grpc::StatusCode::UNAVAILABLE));
  }
  EXPECT_TRUE(Eventually([&] { return engine_->num_live() == 0; }));
}

TEST_F(GrpcFrontEndTest, ApiKeyIsRequiredWhenSet) {
  Serve({}, "sekrit");
  EXPECT_EQ(Generate(GreedyText("Hello", 4)).status.error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(Generate(GreedyText("Hello", 4), "wrong!").status.error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_TRUE(Generate(GreedyText("Hello", 4), "sekrit").status.ok());

  grpc::ClientContext c1;
  v1::ListModelsResponse models;
  EXPECT_EQ(stub_->ListModels(&c1, v1::ListModelsRequest(), &models).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  grpc::ClientContext c2;
  c2.AddMetadata("authorization", "Bearer sekrit");
  EXPECT_TRUE(stub_->ListModels(&c2, v1::ListModelsRequest(), &models).ok());
  // Health stays open to probes.
  EXPECT_EQ(HealthStatus(""), 1);
}

TEST_F(GrpcFrontEndTest, BadRequestsGetInvalidArgumentNamingTheProblem) {
  Serve();
  auto expect_invalid = [&](const v1::GenerateRequest& r, const std::string& words) {
    const Stream s = Generate(r);
    EXPECT_EQ(s.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << words;
    EXPECT_THAT(s.status.error_message(), HasSubstr(words));
    EXPECT_TRUE(s.responses.empty());
  };
  v1::GenerateRequest r = GreedyText("Hello", 4);
  r.clear_text();
  expect_invalid(r, "prompt");

  r = GreedyText("", 4);
  r.mutable_token_ids()->add_ids(1);
  r.mutable_token_ids()->add_ids(model_->config().vocab_size);
  expect_invalid(r, "outside the vocabulary");

  r = GreedyText("", 4);
  for (int i = 0; i < kMaxModelLen + 5; ++i) r.mutable_token_ids()->add_ids(100);
  expect_invalid(r, "maximum context length");

  r = GreedyText("Hello", kMaxModelLen);
  expect_invalid(r, "max_tokens");

  r = GreedyText("Hello", 0);
  expect_invalid(r, "max_tokens");

  r = GreedyText("Hello", 4);
  r.mutable_sampling()->set_top_p(0);
  expect_invalid(r, "top_p");

  r = GreedyText("Hello", 4);
  r.mutable_sampling()->set_top_logprobs(21);
  expect_invalid(r, "top_logprobs");

  r = GreedyText("Hello", 4);
  r.mutable_sampling()->set_prompt_logprobs(21);
  expect_invalid(r, "prompt_logprobs");

  r = GreedyText("Hello", 4);
  (*r.mutable_sampling()->mutable_logit_bias())[5] = 500;
  expect_invalid(r, "logit_bias");

  r = GreedyText("Hello", 4);
  r.set_model("another-model");
  EXPECT_EQ(Generate(r).status.error_code(), grpc::StatusCode::NOT_FOUND);
  r.set_model("stories260K");
  EXPECT_TRUE(Generate(r).status.ok());
}

TEST_F(GrpcFrontEndTest, DrainingIsUnavailableAndAFullQueueIsResourceExhausted) {
  Serve({.max_queued_requests = 0});
  const Stream full = Generate(GreedyText("Hello", 4));
  EXPECT_EQ(full.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  engine_->StartDrain();
  front_->SetServing(false);
  const Stream draining = Generate(GreedyText("Hello", 4));
  EXPECT_EQ(draining.status.error_code(), grpc::StatusCode::UNAVAILABLE);
}

TEST_F(GrpcFrontEndTest, HealthFollowsSetServing) {
  Serve();
  EXPECT_EQ(HealthStatus(""), 1);  // SERVING
  EXPECT_EQ(HealthStatus("kvfold.v1.KvFold"), 1);
  front_->SetServing(false);
  EXPECT_EQ(HealthStatus(""), 2);  // NOT_SERVING
  EXPECT_EQ(HealthStatus("kvfold.v1.KvFold"), 2);
  EXPECT_EQ(HealthStatus("no.such.Service"), -static_cast<int>(grpc::StatusCode::NOT_FOUND));
}

TEST_F(GrpcFrontEndTest, ABusyPortIsAnError) {
  Serve();
  absl::StatusOr<std::unique_ptr<GrpcFrontEnd>> second =
      GrpcFrontEnd::Start(served_, "127.0.0.1", front_->port());
  EXPECT_FALSE(second.ok());
}

}  // namespace
}  // namespace kvfold::rpc
