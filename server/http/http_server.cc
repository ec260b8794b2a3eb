#include "server/http/http_server.h"

#include <sys/socket.h>

#include <atomic>
#include <cerrno>
#include <deque>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "boost/asio.hpp"
#include "boost/beast/core.hpp"
#include "boost/beast/http.hpp"
#include "glog/logging.h"
#include "nlohmann/json.hpp"
#include "server/http/generation_job.h"
#include "server/http/http_routes.h"
#include "server/http/tokenize_handlers.h"

namespace kvfold::http {

namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;

constexpr char kJson[] = "application/json";

struct HttpServer::State {
  State(const serving::ServedModel& m, const HttpOptions& o)
      : model(m), options(o), acceptor(net::make_strand(ioc)) {}

  const serving::ServedModel& model;
  const HttpOptions options;
  net::io_context ioc;
  tcp::acceptor acceptor;
  std::vector<std::thread> threads;
  int port = 0;
  // Requests whose generations run or whose response is still being written.
  std::atomic<int> active{0};
  std::atomic<bool> stopped{false};
};

namespace {

std::chrono::steady_clock::duration ToChrono(absl::Duration d) {
  return std::chrono::duration_cast<std::chrono::steady_clock::duration>(
      absl::ToChronoNanoseconds(d));
}

class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket socket, HttpServer::State* state)
      : state_(state), model_(state_->model), stream_(std::move(socket)) {}

  void Run() {
    net::dispatch(stream_.get_executor(), [self = shared_from_this()] { self->Read(); });
  }

 private:
  void Read() {
    if (closed_) return;
    parser_.emplace();
    parser_->body_limit(state_->options.max_request_bytes);
    stream_.expires_after(ToChrono(state_->options.read_timeout));
    bhttp::async_read(
        stream_, buffer_, *parser_,
        [self = shared_from_this()](beast::error_code ec, size_t) { self->OnRead(ec); });
  }

  void OnRead(beast::error_code ec) {
    if (closed_) return;
    if (ec) {
      keep_alive_ = false;
      if (ec == bhttp::error::body_limit) {
        return ReplyError(api::ApiError{
            .http_status = 413,
            .type = "invalid_request_error",
            .message =
                absl::StrCat("The request body is larger than the server's limit of ",
                             state_->options.max_request_bytes, " bytes (--max-request-bytes)")});
      }
      // A timeout has closed the socket already (tcp_stream's timeouts do): nothing to answer.
      if (ec == bhttp::error::end_of_stream || ec == beast::error::timeout ||
          ec == net::error::operation_aborted || ec == net::error::connection_reset ||
          ec == net::error::eof || !parser_->got_some()) {
        return Close();
      }
      return ReplyError(
          api::InvalidRequest(absl::StrCat("Malformed HTTP request: ", ec.message())));
    }
    stream_.expires_never();
    bhttp::request<bhttp::string_body> request = parser_->release();
    keep_alive_ = request.keep_alive() && !state_->stopped.load();
    Handle(request);
  }

  void Handle(bhttp::request<bhttp::string_body>& request) {
    api::ApiOr<Route> route =
        FindRoute(std::string(request.method_string()), std::string(request.target()));
    if (!route.ok()) return ReplyError(route.error());
    if (NeedsApiKey(*route) && !model_.api_key.empty()) {
      auto it = request.find(bhttp::field::authorization);
      if (it == request.end() || !BearerMatches(std::string(it->value()), model_.api_key)) {
        return ReplyError(Unauthorized());
      }
    }
    serving::ServingEngine& engine = *model_.engine;
    switch (*route) {
      case Route::kHealth:
        return Reply(200, "{}");
      case Route::kReady: {
        const bool ready = engine.Ready();
        const EngineStats stats = engine.Stats();
        nlohmann::json body = {{"ready", ready},
                               {"draining", engine.draining()},
                               {"num_running", stats.num_running},
                               {"num_waiting", stats.num_waiting},
                               {"kv_blocks", stats.num_blocks},
                               {"kv_free_blocks", stats.num_free_blocks}};
        return Reply(ready ? 200 : 503, body.dump());
      }
      case Route::kMetrics: {
        if (model_.metrics == nullptr) return ReplyError({404, "not_found_error", "no metrics"});
        Write(FormatResponse(200, "text/plain; version=0.0.4; charset=utf-8",
                             model_.metrics->Scrape(engine.Stats()), keep_alive_));
        return;
      }
      case Route::kModels: {
        nlohmann::json card = {
            {"id", model_.name},         {"object", "model"},
            {"created", model_.created}, {"owned_by", "kvfold"},
            {"root", model_.name},       {"max_model_len", engine.max_model_len()}};
        return Reply(200, nlohmann::json({{"object", "list"}, {"data", {card}}}).dump());
      }
      case Route::kTokenize:
      case Route::kDetokenize: {
        api::ApiOr<std::string> body = *route == Route::kTokenize
                                           ? TokenizeResponse(request.body(), model_)
                                           : DetokenizeResponse(request.body(), model_);
        if (!body.ok()) return ReplyError(body.error());
        return Reply(200, *body);
      }
      case Route::kCompletions:
      case Route::kChatCompletions:
        return StartJob(*route == Route::kChatCompletions ? JobKind::kChat : JobKind::kCompletion,
                        request.body());
    }
  }

  static api::ApiError Draining() {
    return api::ApiError{
        .http_status = 503, .type = "server_error", .message = "The server is shutting down"};
  }

  void StartJob(JobKind kind, const std::string& body) {
    serving::ServingEngine& engine = *model_.engine;
    if (engine.draining()) return ReplyError(Draining());
    api::ApiOr<std::unique_ptr<GenerationJob>> created = GenerationJob::Create(kind, body, model_);
    if (!created.ok()) return ReplyError(created.error());
    job_ = std::move(*created);
    const uint64_t serial = ++job_serial_;
    Count();
    std::vector<serving::GenerationRequest> requests = std::move(job_->requests());
    ids_.clear();
    for (size_t i = 0; i < requests.size(); ++i) {
      auto on_delta = [self = shared_from_this(), serial, i](serving::GenerationDelta delta) {
        // Engine thread: hand over and return.
        net::post(self->stream_.get_executor(),
                  [self, serial, i, delta = std::move(delta)]() mutable {
                    self->OnDelta(serial, i, std::move(delta));
                  });
      };
      absl::StatusOr<RequestId> id = engine.Submit(std::move(requests[i]), std::move(on_delta));
      if (!id.ok()) {
        DropJob();
        return ReplyError(SubmitError(id.status()),
                          id.status().code() == absl::StatusCode::kResourceExhausted);
      }
      ids_.push_back(*id);
    }
    if (job_->stream()) Write(StreamHead(keep_alive_) + Chunk(job_->StreamStart()));
    WatchPeer(serial);
  }

  static api::ApiError SubmitError(const absl::Status& s) {
    std::string message(s.message());
    switch (s.code()) {
      case absl::StatusCode::kUnavailable:
        return Draining();
      case absl::StatusCode::kResourceExhausted:
        return api::ApiError{.http_status = 429, .type = "rate_limit_error", .message = message};
      case absl::StatusCode::kInvalidArgument:
        return api::InvalidRequest(message);
      default:
        return api::ApiError{.http_status = 500, .type = "server_error", .message = message};
    }
  }

  // While generating, the client sends nothing; the socket turning readable with nothing to read
  // means it closed its end. (Readiness can be stale, left over from bytes the request's read
  // already took, so a peek decides.)
  void WatchPeer(uint64_t serial) {
    stream_.socket().async_wait(
        tcp::socket::wait_read,
        net::bind_executor(
            stream_.get_executor(), [self = shared_from_this(), serial](beast::error_code ec) {
              if (ec || self->closed_ || serial != self->job_serial_ || !self->job_) {
                return;
              }
              switch (self->PeekPeer()) {
                case PeerState::kQuiet:
                  return self->WatchPeer(serial);
                case PeerState::kClosed:
                  VLOG(1) << "client went away; aborting its generations";
                  self->DropJob();
                  return self->Close();
                case PeerState::kSentMore:
                  // Its next request, early (pipelining): the read after this
                  // response takes it; a failed write still aborts.
                  return;
              }
            }));
  }

  enum class PeerState { kQuiet, kClosed, kSentMore };
  PeerState PeekPeer() {
    char byte;
    const ssize_t n = ::recv(stream_.socket().native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n > 0) return PeerState::kSentMore;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
      return PeerState::kQuiet;
    }
    return PeerState::kClosed;  // 0: orderly shutdown; other errors: reset
  }

  void OnDelta(uint64_t serial, size_t choice, serving::GenerationDelta delta) {
    if (closed_ || serial != job_serial_ || !job_) return;
    std::string events = job_->OnDelta(choice, std::move(delta));
    if (job_->stream() && !events.empty()) Write(Chunk(events));
    if (!job_->finished()) return;
    int status = 200;
    std::string tail = job_->Finish(&status);
    if (job_->stream()) {
      Write(Chunk(tail) + LastChunk());
    } else {
      Write(FormatResponse(status, kJson, tail, keep_alive_));
    }
    job_.reset();
    ids_.clear();
  }

  // Aborts what the current request still generates and forgets it (late deltas are dropped).
  void DropJob() {
    for (RequestId id : ids_) model_.engine->Abort(id);
    ids_.clear();
    job_.reset();
    ++job_serial_;
  }

  void Reply(int status, const std::string& body, const Headers& extra = {}) {
    Write(FormatResponse(status, kJson, body, keep_alive_, extra));
  }

  void ReplyError(const api::ApiError& error, bool retry_after = false) {
    Headers extra;
    if (retry_after) extra.emplace_back("Retry-After", "1");
    if (error.http_status == 413 || error.http_status == 400) {
      // Errors from the HTTP layer itself leave the stream's framing in doubt.
      if (error.http_status != 400 || !parser_->is_done()) keep_alive_ = false;
    }
    Reply(error.http_status, api::ErrorBody(error), extra);
  }

  void Write(std::string bytes) {
    if (closed_ || bytes.empty()) return;
    outbox_.push_back(std::move(bytes));
    if (!writing_) WriteNext();
  }

  void WriteNext() {
    writing_ = true;
    stream_.expires_after(ToChrono(state_->options.write_timeout));
    net::async_write(
        stream_, net::buffer(outbox_.front()),
        [self = shared_from_this()](beast::error_code ec, size_t) { self->OnWrite(ec); });
  }

  void OnWrite(beast::error_code ec) {
    writing_ = false;
    if (closed_) return;
    if (ec) {
      if (job_) VLOG(1) << "write failed (" << ec.message() << "); aborting the generations";
      DropJob();
      return Close();
    }
    outbox_.pop_front();
    if (!outbox_.empty()) return WriteNext();
    stream_.expires_never();
    if (job_) return;  // more deltas to come
    Uncount();
    if (keep_alive_) return Read();
    Linger();
  }

  // Closes after a last response without resetting the connection under it: stop sending, read
  // and discard what the client still sends (an oversized body), for a moment.
  void Linger() {
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
    stream_.expires_after(std::chrono::seconds(2));
    stream_.async_read_some(net::buffer(discard_),
                            [self = shared_from_this()](beast::error_code ec, size_t) {
                              if (ec) return self->Close();
                              self->Linger();
                            });
  }

  void Count() {
    if (!counted_) ++state_->active;
    counted_ = true;
  }
  void Uncount() {
    if (counted_) --state_->active;
    counted_ = false;
  }

  void Close() {
    if (closed_) return;
    closed_ = true;
    Uncount();
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ec);
    stream_.close();
  }

  HttpServer::State* state_;  // the server's; it outlives every session (its io_context does)
  const serving::ServedModel& model_;
  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  std::optional<bhttp::request_parser<bhttp::string_body>> parser_;
  bool keep_alive_ = true;
  std::deque<std::string> outbox_;
  bool writing_ = false;
  bool closed_ = false;
  bool counted_ = false;
  std::unique_ptr<GenerationJob> job_;
  std::vector<RequestId> ids_;
  uint64_t job_serial_ = 0;
  char discard_[4096];
};

void Accept(HttpServer::State* state) {
  tcp::acceptor& acceptor = state->acceptor;
  acceptor.async_accept(net::make_strand(state->ioc),
                        [state](beast::error_code ec, tcp::socket socket) {
                          if (ec == net::error::operation_aborted || !state->acceptor.is_open()) {
                            return;
                          }
                          if (!ec) {
                            beast::error_code ignored;
                            socket.set_option(tcp::no_delay(true), ignored);
                            std::make_shared<Session>(std::move(socket), state)->Run();
                          } else {
                            LOG(WARNING) << "accept failed: " << ec.message();
                          }
                          Accept(state);
                        });
}

}  // namespace

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(const serving::ServedModel& model,
                                                              const HttpOptions& options) {
  auto state = std::make_unique<State>(model, options);
  beast::error_code ec;
  const net::ip::address address = net::ip::make_address(options.host, ec);
  if (ec) return absl::InvalidArgumentError(absl::StrCat("bad --host '", options.host, "'"));
  const tcp::endpoint endpoint(address, static_cast<unsigned short>(options.port));
  tcp::acceptor& acceptor = state->acceptor;
  acceptor.open(endpoint.protocol(), ec);
  if (!ec) acceptor.set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) acceptor.bind(endpoint, ec);
  if (!ec) acceptor.listen(net::socket_base::max_listen_connections, ec);
  if (ec) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", options.host, ":", options.port, ": ", ec.message()));
  }
  state->port = acceptor.local_endpoint().port();
  Accept(state.get());
  for (int i = 0; i < std::max(1, options.threads); ++i) {
    state->threads.emplace_back([state = state.get()] { state->ioc.run(); });
  }
  return std::unique_ptr<HttpServer>(new HttpServer(std::move(state)));
}

HttpServer::HttpServer(std::unique_ptr<State> state) : state_(std::move(state)) {}

int HttpServer::port() const { return state_->port; }

void HttpServer::StopAccepting() {
  state_->stopped = true;
  net::post(state_->acceptor.get_executor(), [state = state_.get()] {
    beast::error_code ec;
    state->acceptor.close(ec);
  });
}

void HttpServer::Shutdown(absl::Duration timeout) {
  if (state_->threads.empty()) return;
  StopAccepting();
  const absl::Time deadline = absl::Now() + timeout;
  while (state_->active.load() > 0 && absl::Now() < deadline)
    absl::SleepFor(absl::Milliseconds(10));
  state_->ioc.stop();
  for (std::thread& t : state_->threads) t.join();
  state_->threads.clear();
}

HttpServer::~HttpServer() { Shutdown(absl::ZeroDuration()); }

}  // namespace kvfold::http
