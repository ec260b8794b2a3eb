// The server's output side for one request: incremental detokenization and stop strings. The
// engine is token-level; text-level stops happen here, and the caller aborts the request with
// finish reason `stop` once Push reports a match (DESIGN.md).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "server/tokenizer/tokenizer.h"

namespace kvfold {

class TextOutput {
 public:
  // `tokenizer` must outlive this. The prompt ids give the detokenizer context (a leading space
  // decodes right); empty stop strings are ignored.
  TextOutput(const Tokenizer& tokenizer, absl::Span<const int32_t> prompt_ids,
             std::vector<std::string> stop);

  // Appends one generated token. Returns true when a stop string has appeared: the text is cut
  // before it, the token is kept in token_ids(), and later pushes are ignored.
  absl::StatusOr<bool> Push(int32_t token_id);
  // Flushes text the detokenizer held back (an incomplete character at the end). Call once at
  // the end; a no-op after a stop.
  absl::Status Finish();

  const std::string& text() const { return text_; }
  // How much of text() a stream may send now: all of it, less a tail that could still grow into
  // a stop string (a proper prefix of one), which a later token may turn into a match that must
  // not be shown. Everything once stopped or finished.
  size_t stable_size() const;
  const std::vector<int32_t>& token_ids() const { return token_ids_; }
  bool stopped() const { return stopped_; }

 private:
  // Looks for a stop string in the text appended since `old_size` (and the overlap before it).
  void MatchStop(size_t old_size);

  IncrementalDetokenizer detokenizer_;
  std::vector<std::string> stop_;
  size_t longest_stop_ = 0;
  std::string text_;
  std::vector<int32_t> token_ids_;
  bool stopped_ = false;
  bool finished_ = false;
};

}  // namespace kvfold
