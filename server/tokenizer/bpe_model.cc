#include "server/tokenizer/bpe_model.h"

#include <algorithm>
#include <queue>
#include <utility>

#include "absl/container/inlined_vector.h"
#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "server/tokenizer/byte_level.h"
#include "server/tokenizer/utf8.h"

namespace kvfold::tokenizer_impl {
namespace {

constexpr std::string_view kWhere = "model BPE";

uint64_t PairKey(int32_t left, int32_t right) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
}

// A candidate merge of the symbol at `pos` with its right neighbour.
struct QueuedMerge {
  int32_t rank;
  int32_t pos;
  int32_t new_id;
};

// std::priority_queue keeps the greatest on top; "greater" here is lower rank, then lower pos.
struct LowerRankFirst {
  bool operator()(const QueuedMerge& a, const QueuedMerge& b) const {
    if (a.rank != b.rank) return a.rank > b.rank;
    return a.pos > b.pos;
  }
};

// Words up to this many bytes are cached; longer ones are rare and costly to key.
constexpr size_t kMaxCachedWordBytes = 48;
constexpr size_t kMaxCacheEntries = size_t{1} << 16;

std::atomic<uint64_t> next_cache_id{1};

// The calling thread's cache of word -> ids for one model at a time (switching models clears
// it). Per thread, so a shared const tokenizer needs no lock.
struct WordCache {
  uint64_t owner = 0;
  StringMap<absl::InlinedVector<int32_t, 4>> entries;
};

WordCache& ThreadWordCache() {
  thread_local WordCache cache;
  return cache;
}

// HF splits "a b" merge lines on single spaces and wants exactly two parts.
absl::StatusOr<std::pair<std::string, std::string>> ParseMerge(const Json& item, size_t index) {
  if (item.is_string()) {
    const std::string& line = item.get_ref<const std::string&>();
    const size_t space = line.find(' ');
    if (space == std::string::npos || line.find(' ', space + 1) != std::string::npos) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "model BPE: merge %d (\"%s\") is not two tokens separated by a space", index, line));
    }
    return std::make_pair(line.substr(0, space), line.substr(space + 1));
  }
  if (item.is_array() && item.size() == 2 && item[0].is_string() && item[1].is_string()) {
    return std::make_pair(item[0].get<std::string>(), item[1].get<std::string>());
  }
  return absl::InvalidArgumentError(
      absl::StrFormat("model BPE: merge %d must be a \"a b\" string or a pair of strings", index));
}

}  // namespace

absl::StatusOr<std::unique_ptr<BpeModel>> BpeModel::FromJson(const Json& config) {
  if (!config.is_object()) {
    return absl::InvalidArgumentError("tokenizer.json \"model\" must be an object");
  }
  absl::StatusOr<std::optional<std::string>> type = GetOptionalString(config, "type", "model");
  if (!type.ok()) return type.status();
  if (type->has_value() && **type != "BPE") {
    return absl::UnimplementedError(
        absl::StrFormat("tokenizer.json model \"%s\" is not supported yet", **type));
  }
  std::unique_ptr<BpeModel> model(new BpeModel());
  absl::Status status = model->ReadVocab(config);
  if (status.ok()) status = model->ReadOptions(config);  // merges need the subword prefix
  if (status.ok()) status = model->ReadMerges(config);
  if (!status.ok()) return status;
  return model;
}

absl::StatusOr<std::unique_ptr<BpeModel>> BpeModel::FromTokensAndMerges(
    const std::vector<std::string>& tokens, const std::vector<std::string>& merges) {
  if (static_cast<int64_t>(tokens.size()) > kMaxTokenId + 1) {
    return absl::InvalidArgumentError("too many tokens");
  }
  std::unique_ptr<BpeModel> model(new BpeModel());
  model->vocab_.reserve(tokens.size());
  for (size_t id = 0; id < tokens.size(); ++id) {
    model->vocab_[tokens[id]] = static_cast<int32_t>(id);
  }
  model->IndexVocab();
  model->merges_.reserve(merges.size());
  for (size_t i = 0; i < merges.size(); ++i) {
    absl::StatusOr<std::pair<std::string, std::string>> merge = ParseMerge(Json(merges[i]), i);
    if (!merge.ok()) return merge.status();
    absl::Status status = model->AddMerge(merge->first, merge->second, static_cast<int32_t>(i));
    if (!status.ok()) return status;
  }
  return model;
}

BpeModel::BpeModel() : cache_id_(next_cache_id.fetch_add(1)) {}

void BpeModel::IndexVocab() {
  int32_t size = 0;
  for (const auto& [token, id] : vocab_) size = std::max(size, id + 1);
  id_to_token_.assign(size, std::nullopt);
  for (const auto& [token, id] : vocab_) id_to_token_[id] = token;
  for (int b = 0; b < 256; ++b) {
    byte_ids_[b] = TokenToId(absl::StrFormat("<0x%02X>", b));
  }
}

absl::Status BpeModel::SetByteLevelInput() {
  if (!continuing_subword_prefix_.empty() || !end_of_word_suffix_.empty()) {
    return absl::UnimplementedError(
        "model BPE: subword prefixes/suffixes after a ByteLevel pre-tokenizer are not supported");
  }
  byte_level_ = true;
  const std::array<std::string, 256>& alphabet = ByteLevelAlphabet();
  for (int b = 0; b < 256; ++b) byte_level_ids_[b] = TokenToId(alphabet[b]);
  if (ignore_merges_) {
    raw_vocab_.reserve(vocab_.size());
    for (const auto& [token, id] : vocab_) {
      if (std::optional<std::string> bytes = ByteLevelToBytes(token)) {
        raw_vocab_.try_emplace(*std::move(bytes), id);
      }
    }
  }
  return absl::OkStatus();
}

std::optional<std::string_view> BpeModel::IdToToken(int32_t id) const {
  if (id < 0 || id >= NumIds() || !id_to_token_[id]) return std::nullopt;
  return std::string_view(*id_to_token_[id]);
}

absl::Status BpeModel::ReadVocab(const Json& config) {
  const Json* vocab = FindMember(config, "vocab");
  if (vocab == nullptr || !vocab->is_object()) {
    return absl::InvalidArgumentError("model BPE: \"vocab\" must be an object");
  }
  vocab_.reserve(vocab->size());
  for (const auto& [token, id_json] : vocab->items()) {
    absl::StatusOr<int64_t> id =
        AsInt(id_json, 0, kMaxTokenId, absl::StrCat("model BPE: vocab id of \"", token, "\""));
    if (!id.ok()) return id.status();
    vocab_[token] = static_cast<int32_t>(*id);
  }
  IndexVocab();
  return absl::OkStatus();
}

absl::Status BpeModel::ReadMerges(const Json& config) {
  const Json* merges = FindMember(config, "merges");
  if (merges == nullptr) return absl::OkStatus();
  if (!merges->is_array()) {
    return absl::InvalidArgumentError("model BPE: \"merges\" must be an array");
  }
  merges_.reserve(merges->size());
  int32_t rank = 0;
  for (size_t i = 0; i < merges->size(); ++i) {
    const Json& item = (*merges)[i];
    // HF skips the "#version" header line of merges.txt files; it takes no rank.
    if (item.is_string() && absl::StartsWith(item.get_ref<const std::string&>(), "#version")) {
      continue;
    }
    absl::StatusOr<std::pair<std::string, std::string>> merge = ParseMerge(item, i);
    if (!merge.ok()) return merge.status();
    absl::Status status = AddMerge(merge->first, merge->second, rank++);
    if (!status.ok()) return status;
  }
  return absl::OkStatus();
}

absl::Status BpeModel::AddMerge(std::string_view left, std::string_view right, int32_t rank) {
  const std::optional<int32_t> left_id = TokenToId(left);
  const std::optional<int32_t> right_id = TokenToId(right);
  // The merged token drops the right side's continuing-subword prefix, as HF does.
  std::string_view right_body = right;
  if (right_body.starts_with(continuing_subword_prefix_)) {
    right_body.remove_prefix(continuing_subword_prefix_.size());
  }
  std::string merged(left);
  merged += right_body;
  const std::optional<int32_t> merged_id = TokenToId(merged);
  if (!left_id || !right_id || !merged_id) {
    return absl::InvalidArgumentError(
        absl::StrFormat("model BPE: merge %d (\"%s\" \"%s\") uses a token that is not in the vocab",
                        rank, left, right));
  }
  // A repeated pair keeps its last rank, as HF's HashMap collect does.
  merges_[PairKey(*left_id, *right_id)] = MergeTarget{rank, *merged_id};
  return absl::OkStatus();
}

absl::Status BpeModel::ReadOptions(const Json& config) {
  const Json* dropout = FindMember(config, "dropout");
  if (dropout != nullptr && (!dropout->is_number() || dropout->get<double>() != 0.0)) {
    return absl::UnimplementedError("model BPE: dropout (randomized merges) is not supported");
  }
  absl::StatusOr<std::optional<std::string>> unk = GetOptionalString(config, "unk_token", kWhere);
  if (!unk.ok()) return unk.status();
  if (unk->has_value()) {
    unk_id_ = TokenToId(**unk);
    if (!unk_id_) {
      return absl::InvalidArgumentError(
          absl::StrFormat("model BPE: unk_token \"%s\" is not in the vocab", **unk));
    }
  }
  for (auto [key, member] : {std::pair{"continuing_subword_prefix", &continuing_subword_prefix_},
                             std::pair{"end_of_word_suffix", &end_of_word_suffix_}}) {
    absl::StatusOr<std::optional<std::string>> value = GetOptionalString(config, key, kWhere);
    if (!value.ok()) return value.status();
    *member = value->value_or("");
  }
  for (auto [key, member] :
       {std::pair{"byte_fallback", &byte_fallback_}, std::pair{"fuse_unk", &fuse_unk_},
        std::pair{"ignore_merges", &ignore_merges_}}) {
    absl::StatusOr<bool> value = GetBool(config, key, false, kWhere);
    if (!value.ok()) return value.status();
    *member = *value;
  }
  return absl::OkStatus();
}

std::optional<int32_t> BpeModel::TokenToId(std::string_view token) const {
  const auto it = vocab_.find(token);
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

const BpeModel::MergeTarget* BpeModel::FindMerge(int32_t left, int32_t right) const {
  const auto it = merges_.find(PairKey(left, right));
  return it == merges_.end() ? nullptr : &it->second;
}

void BpeModel::Tokenize(std::string_view word, std::vector<int32_t>* ids) const {
  if (word.empty()) return;
  if (word.size() > kMaxCachedWordBytes) return TokenizeUncached(word, ids);
  WordCache& cache = ThreadWordCache();
  if (cache.owner != cache_id_) {
    cache.entries.clear();
    cache.owner = cache_id_;
  }
  if (const auto it = cache.entries.find(word); it != cache.entries.end()) {
    ids->insert(ids->end(), it->second.begin(), it->second.end());
    return;
  }
  const size_t first = ids->size();
  TokenizeUncached(word, ids);
  if (cache.entries.size() >= kMaxCacheEntries) cache.entries.clear();
  cache.entries.try_emplace(word, ids->begin() + first, ids->end());
}

void BpeModel::TokenizeUncached(std::string_view word, std::vector<int32_t>* ids) const {
  if (ignore_merges_) {
    const StringMap<int32_t>& whole = byte_level_ ? raw_vocab_ : vocab_;
    if (const auto it = whole.find(word); it != whole.end()) {
      ids->push_back(it->second);
      return;
    }
  }
  std::vector<Symbol> symbols = byte_level_ ? ByteLevelSymbols(word) : InitialSymbols(word);
  MergeAll(&symbols);
  for (const Symbol& symbol : symbols) {
    if (symbol.len != 0) ids->push_back(symbol.id);
  }
}

std::vector<BpeModel::Symbol> BpeModel::ByteLevelSymbols(std::string_view word) const {
  std::vector<Symbol> symbols;
  symbols.reserve(word.size());
  // A byte whose character the vocabulary lacks goes the way of any unknown character: <unk>
  // (fused where asked) or dropped.
  size_t unk_len = 0;
  for (const char c : word) {
    if (const std::optional<int32_t> id = byte_level_ids_[static_cast<unsigned char>(c)]) {
      if (unk_len > 0) symbols.push_back(Symbol{*unk_id_, 0, 0, unk_len});
      unk_len = 0;
      symbols.push_back(Symbol{*id, 0, 0, 1});
      continue;
    }
    if (!unk_id_) continue;
    if (unk_len > 0 && !fuse_unk_) {
      symbols.push_back(Symbol{*unk_id_, 0, 0, unk_len});
      unk_len = 0;
    }
    ++unk_len;
  }
  if (unk_len > 0) symbols.push_back(Symbol{*unk_id_, 0, 0, unk_len});
  const int32_t n = static_cast<int32_t>(symbols.size());
  for (int32_t i = 0; i < n; ++i) {
    symbols[i].prev = i - 1;
    symbols[i].next = i + 1 < n ? i + 1 : -1;
  }
  return symbols;
}

std::vector<BpeModel::Symbol> BpeModel::InitialSymbols(std::string_view word) const {
  std::vector<Symbol> symbols;
  symbols.reserve(word.size());
  auto add = [&symbols](int32_t id, size_t len) {
    const int32_t index = static_cast<int32_t>(symbols.size());
    if (!symbols.empty()) symbols.back().next = index;
    symbols.push_back(Symbol{id, index - 1, -1, len});
  };
  const bool affixes = !continuing_subword_prefix_.empty() || !end_of_word_suffix_.empty();
  size_t unk_len = 0;  // bytes covered by an <unk> not yet added, which may still grow
  std::string affixed;
  for (size_t pos = 0; pos < word.size();) {
    const size_t len = Utf8CharLength(static_cast<unsigned char>(word[pos]));
    std::string_view piece = word.substr(pos, len);
    if (affixes) {
      affixed.clear();
      if (pos != 0) affixed += continuing_subword_prefix_;
      affixed += piece;
      if (pos + len == word.size()) affixed += end_of_word_suffix_;
      piece = affixed;
    }
    pos += len;
    if (std::optional<int32_t> id = TokenToId(piece)) {
      if (unk_len > 0) add(*unk_id_, unk_len);
      unk_len = 0;
      add(*id, len);
      continue;
    }
    // HF's byte fallback covers the affixed piece's bytes, each one byte long (and, as in HF,
    // leaves a pending <unk> pending).
    if (byte_fallback_ && std::all_of(piece.begin(), piece.end(), [this](char c) {
          return byte_ids_[static_cast<unsigned char>(c)].has_value();
        })) {
      for (char c : piece) add(*byte_ids_[static_cast<unsigned char>(c)], 1);
      continue;
    }
    if (!unk_id_) continue;  // no unk token: HF drops the character
    if (unk_len > 0 && !fuse_unk_) {
      add(*unk_id_, unk_len);
      unk_len = 0;
    }
    unk_len += len;
  }
  if (unk_len > 0) add(*unk_id_, unk_len);
  return symbols;
}

void BpeModel::MergeAll(std::vector<Symbol>* symbols_ptr) const {
  std::vector<Symbol>& symbols = *symbols_ptr;
  std::priority_queue<QueuedMerge, std::vector<QueuedMerge>, LowerRankFirst> queue;
  auto enqueue = [&](int32_t pos) {
    const int32_t next = symbols[pos].next;
    if (next < 0) return;
    if (const MergeTarget* merge = FindMerge(symbols[pos].id, symbols[next].id)) {
      queue.push(QueuedMerge{merge->rank, pos, merge->new_id});
    }
  };
  for (int32_t pos = 0; pos + 1 < static_cast<int32_t>(symbols.size()); ++pos) enqueue(pos);
  while (!queue.empty()) {
    const QueuedMerge top = queue.top();
    queue.pop();
    Symbol& left = symbols[top.pos];
    if (left.len == 0 || left.next < 0) continue;
    // Skip entries made stale by an earlier merge on either side.
    Symbol& right = symbols[left.next];
    const MergeTarget* merge = FindMerge(left.id, right.id);
    if (merge == nullptr || merge->new_id != top.new_id) continue;
    left.id = top.new_id;
    left.len += right.len;
    left.next = right.next;
    right.len = 0;
    if (left.next >= 0) symbols[left.next].prev = top.pos;
    if (left.prev >= 0) enqueue(left.prev);
    enqueue(top.pos);
  }
}

}  // namespace kvfold::tokenizer_impl
