#include "server/tokenizer/spm_model.h"

#include <queue>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "server/tokenizer/utf8.h"

namespace kvfold::tokenizer_impl {
namespace {

struct Symbol {
  int32_t prev;
  int32_t next;
  size_t begin;  // byte range of the word
  size_t len;    // 0 once merged into its left neighbour
};

struct Bigram {
  int32_t left;
  int32_t right;
  float score;
  size_t len;  // bytes of the merged text, to spot stale entries
};

// llama.cpp's order: higher score first, then the leftmost pair.
struct LowerPriority {
  bool operator()(const Bigram& a, const Bigram& b) const {
    return a.score < b.score || (a.score == b.score && a.left > b.left);
  }
};

}  // namespace

absl::StatusOr<std::unique_ptr<SpmModel>> SpmModel::Create(std::vector<std::string> tokens,
                                                           std::vector<float> scores,
                                                           std::optional<int32_t> unk_id) {
  if (tokens.size() != scores.size()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%d tokens but %d scores: the lists must be equally long", tokens.size(), scores.size()));
  }
  if (static_cast<int64_t>(tokens.size()) > kMaxTokenId + 1) {
    return absl::InvalidArgumentError("too many tokens");
  }
  std::unique_ptr<SpmModel> model(new SpmModel());
  model->tokens_ = std::move(tokens);
  model->scores_ = std::move(scores);
  model->vocab_.reserve(model->tokens_.size());
  for (size_t id = 0; id < model->tokens_.size(); ++id) {
    model->vocab_[model->tokens_[id]] = static_cast<int32_t>(id);
  }
  for (int b = 0; b < 256; ++b) {
    model->byte_ids_[b] = model->TokenToId(absl::StrFormat("<0x%02X>", b));
    // llama.cpp falls back to the byte itself as a token where there is no <0xNN> piece.
    if (!model->byte_ids_[b]) model->byte_ids_[b] = model->TokenToId(std::string(1, char(b)));
  }
  if (unk_id && (*unk_id < 0 || *unk_id >= model->NumIds())) unk_id.reset();
  model->unk_id_ = unk_id;
  return model;
}

std::optional<int32_t> SpmModel::TokenToId(std::string_view token) const {
  const auto it = vocab_.find(token);
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

std::optional<std::string_view> SpmModel::IdToToken(int32_t id) const {
  if (id < 0 || id >= NumIds()) return std::nullopt;
  return std::string_view(tokens_[id]);
}

void SpmModel::Tokenize(std::string_view word, std::vector<int32_t>* ids) const {
  if (word.empty()) return;
  std::vector<Symbol> symbols;
  symbols.reserve(word.size());
  for (size_t pos = 0; pos < word.size();) {
    const size_t len =
        std::min(Utf8CharLength(static_cast<unsigned char>(word[pos])), word.size() - pos);
    const int32_t index = static_cast<int32_t>(symbols.size());
    symbols.push_back(Symbol{index - 1, pos + len == word.size() ? -1 : index + 1, pos, len});
    pos += len;
  }
  std::priority_queue<Bigram, std::vector<Bigram>, LowerPriority> queue;
  auto try_add = [&](int32_t left, int32_t right) {
    if (left < 0 || right < 0) return;
    const size_t len = symbols[left].len + symbols[right].len;
    if (std::optional<int32_t> id = TokenToId(word.substr(symbols[left].begin, len))) {
      queue.push(Bigram{left, right, scores_[*id], len});
    }
  };
  for (int32_t i = 1; i < static_cast<int32_t>(symbols.size()); ++i) try_add(i - 1, i);
  while (!queue.empty()) {
    const Bigram bigram = queue.top();
    queue.pop();
    Symbol& left = symbols[bigram.left];
    Symbol& right = symbols[bigram.right];
    if (left.len == 0 || right.len == 0 || left.len + right.len != bigram.len) continue;
    left.len += right.len;
    right.len = 0;
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = bigram.left;
    try_add(left.prev, bigram.left);
    try_add(bigram.left, left.next);
  }
  // Merged symbols are tokens by construction; a single character that is not one is spelled
  // as byte pieces (<unk> for a byte without one, where llama.cpp would throw).
  for (int32_t i = 0; i != -1; i = symbols[i].next) {
    const std::string_view text = word.substr(symbols[i].begin, symbols[i].len);
    if (std::optional<int32_t> id = TokenToId(text)) {
      ids->push_back(*id);
      continue;
    }
    for (const char c : text) {
      const std::optional<int32_t> byte = byte_ids_[static_cast<unsigned char>(c)];
      if (byte) {
        ids->push_back(*byte);
      } else if (unk_id_) {
        ids->push_back(*unk_id_);
      }
    }
  }
}

}  // namespace kvfold::tokenizer_impl
