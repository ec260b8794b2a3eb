// IncrementalDetokenizer: decode a short window of recent ids twice (without and with the new
// ones) and emit the difference, as vLLM and TGI do; see tokenizer.h for the contract.
#include <algorithm>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "server/tokenizer/tokenizer.h"

namespace kvfold {
namespace {

// Prefix ids kept as decoding context: enough that a decoder's start-of-text rules (Strip,
// Metaspace) act on them rather than on the first emitted token.
constexpr int kContextIds = 4;

constexpr std::string_view kReplacementCharacter = "\xEF\xBF\xBD";  // U+FFFD

// Length of the longest common prefix of `a` and `b` that ends on a character boundary of `b`.
size_t CommonPrefixLength(std::string_view a, std::string_view b) {
  size_t n = 0;
  while (n < a.size() && n < b.size() && a[n] == b[n]) ++n;
  while (n > 0 && n < b.size() && (static_cast<unsigned char>(b[n]) & 0xC0) == 0x80) --n;
  return n;
}

}  // namespace

IncrementalDetokenizer::IncrementalDetokenizer(const Tokenizer& tokenizer, bool skip_special_tokens,
                                               absl::Span<const int32_t> prefix_ids)
    : tokenizer_(tokenizer),
      skip_special_tokens_(skip_special_tokens),
      ids_(prefix_ids.begin(), prefix_ids.end()),
      prefix_offset_(ids_.size()),
      read_offset_(ids_.size()) {
  // Walk back over kContextIds ids that produce text, then to the start of a byte-piece run.
  int context = 0;
  while (prefix_offset_ > 0 && context < kContextIds) {
    const int32_t id = ids_[--prefix_offset_];
    if (!(skip_special_tokens_ && tokenizer_.IsSpecial(id))) ++context;
  }
  while (prefix_offset_ > 0 && tokenizer_.DecodesWithNext(ids_[prefix_offset_])) --prefix_offset_;
}

absl::StatusOr<std::string> IncrementalDetokenizer::Push(int32_t id) {
  if (!tokenizer_.IdToToken(id)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "token id %d is not in the vocabulary (size %d)", id, tokenizer_.vocab_size()));
  }
  ids_.push_back(id);
  // A skipped token adds no text, and a byte piece waits for the end of its run.
  if (skip_special_tokens_ && tokenizer_.IsSpecial(id)) return std::string();
  if (tokenizer_.DecodesWithNext(id)) return std::string();
  return Emit(/*final=*/false);
}

absl::StatusOr<std::string> IncrementalDetokenizer::Finish() { return Emit(/*final=*/true); }

absl::StatusOr<std::string> IncrementalDetokenizer::Emit(bool final) {
  const absl::Span<const int32_t> ids(ids_);
  absl::StatusOr<std::string> before = tokenizer_.Decode(
      ids.subspan(prefix_offset_, read_offset_ - prefix_offset_), skip_special_tokens_);
  if (!before.ok()) return before.status();
  absl::StatusOr<std::string> after =
      tokenizer_.Decode(ids.subspan(prefix_offset_), skip_special_tokens_);
  if (!after.ok()) return after.status();
  // A trailing U+FFFD may be an incomplete character that the next ids complete.
  if (!final && std::string_view(*after).ends_with(kReplacementCharacter)) return std::string();
  // `before` is a prefix of `after` unless the window starts inside a byte-piece run (a prefix
  // cut mid-character); then emit from the last shared character.
  const size_t shared = std::string_view(*after).starts_with(*before)
                            ? before->size()
                            : CommonPrefixLength(*before, *after);
  if (after->size() <= shared) return std::string();
  prefix_offset_ = read_offset_;
  read_offset_ = ids_.size();
  return after->substr(shared);
}

}  // namespace kvfold
