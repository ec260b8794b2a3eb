// The gRPC front end over a model in its own process, for tests that drive it from another one
// (tests/e2e/grpc_client_test.py) until `kvfold serve` runs it. Prints "port N" once serving; on
// SIGTERM or SIGINT it drains the way serve does (health NOT_SERVING, refuse new work, finish live
// streams, shut down) and exits 0.
//
// Usage: grpc_test_server MODEL [--chat-template FILE] [--api-key KEY] [--max-model-len N]
#include <csignal>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>

#include "absl/strings/numbers.h"
#include "glog/logging.h"
#include "kernels/cpu/cpu_ops.h"
#include "server/grpc/grpc_front_end.h"
#include "server/serving/chat_prompt.h"
#include "server/serving/served_model.h"
#include "worker/llama_model.h"
#include "worker/model_loader.h"

namespace {

int Fail(const std::string& message) {
  std::cerr << "grpc_test_server: " << message << "\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace kvfold;  // NOLINT: a test tool's main
  google::InitGoogleLogging(argv[0]);
  // Signals are taken with sigwait, so block them before any thread (engine, gRPC) starts.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  if (argc < 2) return Fail("usage: grpc_test_server MODEL [--chat-template FILE] [--api-key KEY]");
  const std::string model_path = argv[1];
  std::string chat_template, api_key;
  int32_t max_model_len = 256;
  for (int i = 2; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--chat-template") {
      chat_template = argv[i + 1];
    } else if (flag == "--api-key") {
      api_key = argv[i + 1];
    } else if (flag == "--max-model-len") {
      if (!absl::SimpleAtoi(argv[i + 1], &max_model_len)) return Fail("bad --max-model-len");
    } else {
      return Fail("unknown flag " + flag);
    }
  }

  std::unique_ptr<Ops> ops = NewCpuOps(1);
  absl::StatusOr<std::unique_ptr<WeightSource>> weights = OpenWeights(model_path);
  if (!weights.ok()) return Fail(weights.status().ToString());
  absl::StatusOr<std::unique_ptr<LlamaModel>> model = LlamaModel::Load(*std::move(weights), *ops);
  if (!model.ok()) return Fail(model.status().ToString());
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = Tokenizer::FromFile(model_path);
  if (!tokenizer.ok()) return Fail(tokenizer.status().ToString());
  std::unique_ptr<serving::ChatPrompt> chat;
  if (!chat_template.empty()) {
    absl::StatusOr<serving::ChatPrompt> prompt =
        serving::ChatPrompt::ForModel(model_path, chat_template, **tokenizer);
    if (!prompt.ok()) return Fail(prompt.status().ToString());
    chat = std::make_unique<serving::ChatPrompt>(*std::move(prompt));
  }

  CacheConfig cache;
  cache.memory_bytes = int64_t{8} << 20;
  cache.kv_dtype = DType::kF32;
  SchedulerConfig scheduler;
  scheduler.max_model_len = max_model_len;
  scheduler.eos_token_ids = (*model)->config().eos_token_ids;
  absl::StatusOr<std::unique_ptr<serving::ServingEngine>> engine =
      serving::ServingEngine::Create(**model, *ops, **tokenizer, cache, scheduler);
  if (!engine.ok()) return Fail(engine.status().ToString());

  serving::ServedModel served;
  served.name = "stories260K";
  served.path = model_path;
  served.created = 1700000000;
  served.engine = engine->get();
  served.tokenizer = tokenizer->get();
  served.chat = chat.get();
  served.api_key = api_key;
  absl::StatusOr<std::unique_ptr<rpc::GrpcFrontEnd>> front =
      rpc::GrpcFrontEnd::Start(served, "127.0.0.1", 0);
  if (!front.ok()) return Fail(front.status().ToString());
  std::cout << "port " << (*front)->port() << std::endl;

  int signal = 0;
  sigwait(&signals, &signal);
  // Serve's drain: tell load balancers, refuse new work, let live streams finish (and their last
  // responses reach the clients), then stop.
  (*front)->SetServing(false);
  (*engine)->StartDrain();
  const bool idle = (*engine)->WaitIdle(absl::Seconds(30));
  (*front)->Shutdown(absl::Seconds(5));
  if (!idle) (*engine)->AbortAll();
  front->reset();
  engine->reset();
  std::cout << "drained" << std::endl;
  return 0;
}
