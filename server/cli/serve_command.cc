// `kvfold serve`: loads one model, starts the engine over the KV pool and the OpenAI-compatible
// HTTP and gRPC front ends, then serves until SIGTERM or SIGINT, when it stops accepting, lets
// in-flight requests finish up to --drain-timeout and exits 0.
//
// Tensor parallelism (tensor_parallel_launch.h): the leader serves, its followers (processes it
// starts, or other nodes' `serve --node-rank R`) run its steps. When the group fails (a rank died
// or stopped answering), the step in flight fails its requests, the engine is marked failed
// (/ready 503, new requests 503), the remaining requests get their errors and the process exits 1;
// a watchdog makes sure it never hangs on the way out.
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/status/status.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "server/cli/attention_plan_setup.h"
#include "server/cli/command.h"
#include "server/cli/common_flags.h"
#include "server/cli/device_setup.h"
#include "server/cli/engine_flags.h"
#include "server/cli/gpu_memory_setup.h"
#include "server/cli/model_setup.h"
#include "server/cli/tensor_parallel_flags.h"
#include "server/cli/tensor_parallel_launch.h"
#include "server/grpc/grpc_front_end.h"
#include "server/http/http_server.h"
#include "server/metrics/request_log.h"
#include "server/metrics/serving_metrics.h"
#include "server/serving/chat_prompt.h"
#include "server/serving/served_model.h"
#include "server/serving/serving_engine.h"

ABSL_FLAG(std::string, host, "127.0.0.1", "Address the HTTP (and gRPC) front ends bind");
ABSL_FLAG(int, port, 8000, "HTTP port (0: an ephemeral port, printed when listening)");
ABSL_FLAG(std::string, log_format, "text",
          "Request log lines (one per finished generation, never prompt text): text or json");
ABSL_FLAG(int, grpc_port, 50051, "gRPC port (0: any free port, printed; -1: no gRPC front end)");
ABSL_FLAG(std::string, served_model_name, "",
          "The name requests' \"model\" must give (default: the model file's or folder's name)");
ABSL_FLAG(std::string, chat_template, "",
          "Jinja chat template file (default: the model's own, from GGUF metadata or "
          "tokenizer_config.json)");
ABSL_FLAG(std::string, api_key, "",
          "Require 'Authorization: Bearer KEY' on /v1/* (default: $KVFOLD_API_KEY; empty: open)");
ABSL_FLAG(int64_t, max_request_bytes, 4 << 20, "Largest request body accepted (larger: 413)");
ABSL_FLAG(int, max_queued_requests, 512,
          "Generations that may wait for the engine; more are refused with 429");
ABSL_FLAG(int, drain_timeout, 30,
          "Seconds in-flight requests get to finish after SIGTERM before they are aborted");
ABSL_FLAG(int, read_timeout, 30,
          "Seconds a request may take to arrive (and an idle keep-alive connection stays open)");
ABSL_FLAG(int, http_threads, 2, "Threads running the HTTP connections");
ABSL_FLAG(int, max_n, 16, "Most choices (n) per request");
ABSL_FLAG(bool, log_prompts, false, "Log request prompts (never logged otherwise)");

namespace kvfold::cli {
namespace {

std::string DefaultServedName(const std::string& path) {
  std::filesystem::path p(path);
  while (!p.empty() && p.filename().empty()) p = p.parent_path();  // "models/x/" -> "x"
  return p.filename().string();
}

int Fail(const absl::Status& s, int code = 1) {
  std::cerr << "kvfold serve: " << s.message() << "\n";
  return code;
}

// The tensor-parallel group failed: /ready already answers 503 and new requests are refused. The
// step in flight has failed (or fails within --tensor-parallel-timeout) its requests; once they
// have their errors, stop the front ends and exit 1. A watchdog exits regardless if any of that
// hangs.
int ExitAfterGroupFailure(serving::ServingEngine& engine, http::HttpServer& server,
                          rpc::GrpcFrontEnd* grpc, TensorParallelGroup& group) {
  std::cerr << "kvfold serve: the tensor-parallel group failed: " << engine.failure().message()
            << "; exiting" << std::endl;
  const int timeout = absl::GetFlag(FLAGS_tensor_parallel_timeout);
  std::thread([timeout] {
    std::this_thread::sleep_for(std::chrono::seconds(timeout + 30));
    std::cerr << "kvfold serve: shutdown after the tensor-parallel failure hung; exiting"
              << std::endl;
    _exit(1);
  }).detach();
  if (grpc != nullptr) grpc->SetServing(false);
  if (!engine.WaitIdle(absl::Seconds(timeout + 5))) {
    engine.AbortAll();
    engine.WaitIdle(absl::Seconds(5));
  }
  server.StopAccepting();
  if (grpc != nullptr) grpc->Shutdown(absl::Seconds(5));
  server.Shutdown(absl::Seconds(5));
  // Not the engine's destructor nor the group's stop: the communicator is broken, and _exit
  // skips them. The group's followers (on one node) are ended first.
  group.Abandon();
  std::cout.flush();
  std::cerr.flush();
  _exit(1);
}

}  // namespace

int RunServe(const std::vector<std::string>& positional) {
  if (!positional.empty()) {
    std::cerr << "kvfold serve: unexpected argument '" << positional[0] << "'\n";
    return 2;
  }
  const int port = absl::GetFlag(FLAGS_port);
  const int grpc_port = absl::GetFlag(FLAGS_grpc_port);
  if (port < 0 || port > 65535 || grpc_port < -1 || grpc_port > 65535) {
    std::cerr << "kvfold serve: --port must be in [0, 65535] and --grpc-port in [-1, 65535]\n";
    return 2;
  }
  if (absl::GetFlag(FLAGS_max_request_bytes) < 1 || absl::GetFlag(FLAGS_max_queued_requests) < 0 ||
      absl::GetFlag(FLAGS_drain_timeout) < 0 || absl::GetFlag(FLAGS_read_timeout) < 1 ||
      absl::GetFlag(FLAGS_http_threads) < 1 || absl::GetFlag(FLAGS_max_n) < 1) {
    std::cerr << "kvfold serve: --max-request-bytes, --read-timeout, --http-threads and --max-n "
                 "must be >= 1; --max-queued-requests and --drain-timeout >= 0\n";
    return 2;
  }
  // Every thread started from here on (engine, HTTP) inherits the mask, so the signals wait for
  // sigwait below instead of killing the process mid-response.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGUSR1);  // the tensor-parallel group failed (raised by this process)
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  absl::StatusOr<Device> device = DeviceFromFlags();
  if (!device.ok()) return Fail(device.status(), 2);
  if (absl::Status s = CheckTensorParallelDevice(*device, absl::GetFlag(FLAGS_tensor_parallel_size),
                                                 absl::GetFlag(FLAGS_nnodes));
      !s.ok()) {
    return Fail(s, 2);
  }
  std::string path = absl::GetFlag(FLAGS_model);
  if (path.empty() && absl::GetFlag(FLAGS_tp_rank) == 0) path = DefaultModelPath();
  // Followers load the same model and plan with the same threads and run the leader's steps.
  absl::StatusOr<std::unique_ptr<TensorParallelGroup>> group = TensorParallelGroup::Join(
      "serve", path,
      {"--model=" + path, "--threads=" + std::to_string(absl::GetFlag(FLAGS_threads)),
       "--attention-plan=" + absl::GetFlag(FLAGS_attention_plan),
       "--device=" + absl::GetFlag(FLAGS_device)});
  if (!group.ok()) return Fail(group.status());
  const TensorParallel tp = (*group)->place();
  absl::StatusOr<LoadedModel> loaded =
      LoadModel(path, absl::GetFlag(FLAGS_threads), (*group)->PlaceModel(*device));
  if (!loaded.ok()) return Fail(loaded.status());
  LlamaModel& model = *loaded->model;
  if (tp.rank > 0) {
    // A follower: SIGTERM and SIGINT end it (its leader ends with an error, as for a crash).
    pthread_sigmask(SIG_UNBLOCK, &signals, nullptr);
    const absl::Status s = (*group)->Follow(model, *loaded->ops);
    if (s.ok()) return 0;
    std::cerr << "kvfold serve (tensor-parallel rank " << tp.rank << "): " << s.message() << "\n";
    return 1;
  }
  if (tp.size > 1) {
    StepSink& steps = (*group)->steps();
    model.set_before_forward([&steps](const ForwardBatch& batch, const KvCache& cache) {
      return steps.Send(batch, cache);
    });
    // An idle server still tells its followers it lives (their wait for a step has a timeout).
    model.set_on_idle([&steps] { return steps.Keepalive(); });
  }

  if (absl::StatusOr<CacheConfig> flags = CacheConfigFromFlags(); !flags.ok()) {
    return Fail(flags.status(), 2);
  }
  absl::StatusOr<SchedulerConfig> scheduler = SchedulerConfigFromFlags(model.config());
  if (!scheduler.ok()) return Fail(scheduler.status(), 2);
  // On a GPU: the activation peak is profiled and the KV pool sized from what is left.
  absl::StatusOr<CacheConfig> cache = EngineCacheConfig(*loaded, *scheduler);
  if (!cache.ok()) return Fail(cache.status());
  absl::StatusOr<metrics::LogFormat> log_format =
      metrics::ParseLogFormat(absl::GetFlag(FLAGS_log_format));
  if (!log_format.ok()) return Fail(log_format.status(), 2);
  serving::ServingOptions options;
  options.max_queued_requests = absl::GetFlag(FLAGS_max_queued_requests);
  options.request_log = *log_format;
  options.device_sampler = loaded->sampler.get();
  absl::StatusOr<std::unique_ptr<serving::ServingEngine>> engine = serving::ServingEngine::Create(
      model, *loaded->ops, *loaded->tokenizer, *cache, *scheduler, options);
  if (!engine.ok()) return Fail(engine.status());
  const serving::PoolInfo& pool = (*engine)->pool();
  std::cerr << KvMemoryLine(model, absl::GetFlag(FLAGS_attention_plan), pool.kv_dtype,
                            pool.num_blocks, pool.block_size, scheduler->max_model_len,
                            pool.memory_bytes)
            << "\n";
  // A failed collective (on the engine thread) or a follower that exited (on the group's
  // watcher): the engine refuses work from now on, and the main thread below shuts down.
  serving::ServingEngine* failing_engine = engine->get();
  (*group)->OnFailure([failing_engine](const absl::Status& s) {
    failing_engine->Fail(s);
    kill(getpid(), SIGUSR1);
  });

  // The chat template: an explicit --chat-template must load; a model without one serves
  // completions only.
  const std::string template_file = absl::GetFlag(FLAGS_chat_template);
  std::unique_ptr<serving::ChatPrompt> chat;
  absl::StatusOr<serving::ChatPrompt> prompt =
      serving::ChatPrompt::ForModel(path, template_file, *loaded->tokenizer);
  if (prompt.ok()) {
    chat = std::make_unique<serving::ChatPrompt>(*std::move(prompt));
  } else if (absl::IsNotFound(prompt.status()) && template_file.empty()) {
    std::cerr << "kvfold serve: the model has no chat template; /v1/chat/completions answers 400 "
                 "(pass --chat-template FILE)\n";
  } else {
    return Fail(prompt.status(), 2);
  }

  serving::ServedModel served;
  served.name = absl::GetFlag(FLAGS_served_model_name);
  if (served.name.empty()) served.name = DefaultServedName(path);
  served.path = path;
  served.created = absl::ToUnixSeconds(absl::Now());
  served.engine = engine->get();
  served.tokenizer = loaded->tokenizer.get();
  served.chat = chat.get();
  served.api_key = absl::GetFlag(FLAGS_api_key);
  if (const char* env = std::getenv("KVFOLD_API_KEY"); served.api_key.empty() && env != nullptr) {
    served.api_key = env;
  }
  served.log_prompts = absl::GetFlag(FLAGS_log_prompts);
  served.max_n = absl::GetFlag(FLAGS_max_n);
  served.metrics = (*engine)->AttachMetrics(
      std::make_unique<metrics::ServingMetrics>(served.name, (*engine)->MetricsInfo(model)));

  http::HttpOptions http_options;
  http_options.host = absl::GetFlag(FLAGS_host);
  http_options.port = port;
  http_options.threads = absl::GetFlag(FLAGS_http_threads);
  http_options.max_request_bytes = static_cast<size_t>(absl::GetFlag(FLAGS_max_request_bytes));
  http_options.read_timeout = absl::Seconds(absl::GetFlag(FLAGS_read_timeout));
  absl::StatusOr<std::unique_ptr<http::HttpServer>> server =
      http::HttpServer::Start(served, http_options);
  if (!server.ok()) return Fail(server.status());

  // gRPC binds the same host; started before the "serving" line so that line means both are up.
  std::unique_ptr<rpc::GrpcFrontEnd> grpc;
  if (grpc_port >= 0) {
    absl::StatusOr<std::unique_ptr<rpc::GrpcFrontEnd>> started =
        rpc::GrpcFrontEnd::Start(served, http_options.host, grpc_port);
    if (!started.ok()) return Fail(started.status());
    grpc = *std::move(started);
  }

  std::cout << "serving " << served.name << " on http://" << http_options.host << ":"
            << (*server)->port() << std::endl;
  if (grpc != nullptr) {
    std::cout << "grpc on " << http_options.host << ":" << grpc->port() << std::endl;
  }

  int signal_number = 0;
  sigwait(&signals, &signal_number);
  if (signal_number == SIGUSR1) {
    return ExitAfterGroupFailure(**engine, **server, grpc.get(), **group);
  }
  const int drain_seconds = absl::GetFlag(FLAGS_drain_timeout);
  std::cerr << "kvfold serve: " << (signal_number == SIGTERM ? "SIGTERM" : "SIGINT")
            << ": draining (up to " << drain_seconds << " s)" << std::endl;
  (*server)->StopAccepting();
  if (grpc != nullptr) grpc->SetServing(false);
  (*engine)->StartDrain();
  if (!(*engine)->WaitIdle(absl::Seconds(drain_seconds))) {
    std::cerr << "kvfold serve: " << (*engine)->num_live()
              << " generations still running after --drain-timeout; aborting them" << std::endl;
    (*engine)->AbortAll();
    (*engine)->WaitIdle(absl::Seconds(10));
  }
  // The last responses' bytes are still being written. Front ends go before the engine.
  if (grpc != nullptr) grpc->Shutdown(absl::Seconds(5));
  (*server)->Shutdown(absl::Seconds(5));
  grpc.reset();
  server->reset();
  engine->reset();  // its loop ran the collectives; the group's stop comes after it
  if (tp.size > 1) {
    std::cerr << (*group)->StatsLine() << std::endl;
    if (absl::Status s = (*group)->Finish(); !s.ok()) return Fail(s);
  }
  std::cerr << "kvfold serve: stopped" << std::endl;
  return 0;
}

}  // namespace kvfold::cli
