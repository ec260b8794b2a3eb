// The OpenAI-compatible HTTP/1.1 front end of `kvfold serve`, on Boost.Beast over Asio.
//
// Why Beast and not cpp-httplib (also in Debian): httplib runs each connection on a pool thread
// that blocks for as long as the response lasts, so every open SSE stream would hold a thread and
// a few hundred slow readers would starve the server. Here sockets are asynchronous: a few
// threads run one io_context, each connection is a Session on its own strand, and a stream costs
// a socket and a buffer, not a thread. Engine deltas arrive on the engine thread and are posted to
// the session's strand (the engine thread never blocks on a client).
//
// Per connection: keep-alive; a read timeout for each request (a request written in slow pieces
// is fine as long as it completes in time); a body limit (413); while a request generates, the
// socket is watched for EOF so a client that goes away aborts its generations at once (their KV
// blocks are free within one engine step), as does a failed write.
#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/serving/served_model.h"

namespace kvfold::http {

struct HttpOptions {
  std::string host = "127.0.0.1";
  int port = 8000;  // 0: an ephemeral port (HttpServer::port() says which)
  int threads = 2;  // io_context threads
  size_t max_request_bytes = 4 << 20;
  // A request (head and body) must arrive within this; an idle keep-alive connection closes after
  // it too.
  absl::Duration read_timeout = absl::Seconds(30);
  // A write the client does not take within this counts as a disconnect.
  absl::Duration write_timeout = absl::Seconds(60);
};

class HttpServer {
 public:
  // Binds and starts serving. `model` (and its engine) must outlive the server, and the engine
  // must have no live generations when the server is destroyed (serve drains it first).
  static absl::StatusOr<std::unique_ptr<HttpServer>> Start(const serving::ServedModel& model,
                                                           const HttpOptions& options);
  ~HttpServer();

  int port() const;
  // Closes the listening socket; open connections are still served.
  void StopAccepting();
  // Waits up to `timeout` for responses in progress to be written out, then closes every
  // connection and stops the threads.
  void Shutdown(absl::Duration timeout);

  struct State;

 private:
  explicit HttpServer(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

}  // namespace kvfold::http
