#include "server/output/text_output.h"

#include <algorithm>

namespace kvfold {

TextOutput::TextOutput(const Tokenizer& tokenizer, absl::Span<const int32_t> prompt_ids,
                       std::vector<std::string> stop)
    : detokenizer_(tokenizer, /*skip_special_tokens=*/true, prompt_ids) {
  for (std::string& s : stop) {
    if (s.empty()) continue;
    longest_stop_ = std::max(longest_stop_, s.size());
    stop_.push_back(std::move(s));
  }
}

absl::StatusOr<bool> TextOutput::Push(int32_t token_id) {
  if (stopped_) return true;
  token_ids_.push_back(token_id);
  absl::StatusOr<std::string> piece = detokenizer_.Push(token_id);
  if (!piece.ok()) return piece.status();
  const size_t old_size = text_.size();
  text_ += *piece;
  MatchStop(old_size);
  return stopped_;
}

absl::Status TextOutput::Finish() {
  if (stopped_) return absl::OkStatus();
  finished_ = true;
  absl::StatusOr<std::string> tail = detokenizer_.Finish();
  if (!tail.ok()) return tail.status();
  const size_t old_size = text_.size();
  text_ += *tail;
  MatchStop(old_size);
  return absl::OkStatus();
}

size_t TextOutput::stable_size() const {
  if (stopped_ || finished_) return text_.size();
  // The longest suffix of the text that is a proper prefix of a stop string is held back.
  size_t held = 0;
  for (const std::string& s : stop_) {
    for (size_t n = std::min(s.size() - 1, text_.size()); n > held; --n) {
      if (text_.compare(text_.size() - n, n, s, 0, n) == 0) {
        held = n;
        break;
      }
    }
  }
  return text_.size() - held;
}

void TextOutput::MatchStop(size_t old_size) {
  if (stop_.empty() || text_.size() == old_size) return;
  // A match must end in the new text, so it starts at most longest_stop_ - 1 bytes before it.
  const size_t from = old_size >= longest_stop_ ? old_size - longest_stop_ + 1 : 0;
  size_t first = std::string::npos;
  for (const std::string& s : stop_) first = std::min(first, text_.find(s, from));
  if (first == std::string::npos) return;
  text_.resize(first);
  stopped_ = true;
}

}  // namespace kvfold
