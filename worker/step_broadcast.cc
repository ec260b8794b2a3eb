#include "worker/step_broadcast.h"

#include <cstdint>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "worker/status_macros.h"

namespace kvfold {
namespace {

enum Command : int32_t { kStop = 0, kForward = 1 };

// The header: every field an int32 in one float slot.
struct Header {
  int32_t command = kStop;
  int32_t num_tokens = 0, num_seqs = 0, max_blocks_per_seq = 0, num_logits = 0;
  int32_t cache_blocks = 0, cache_block_size = 0, cache_dtype = 0;
};
constexpr size_t kHeaderSlots = sizeof(Header) / sizeof(int32_t);
static_assert(sizeof(float) == sizeof(int32_t));

// Slots of the batch after the header.
size_t PayloadSlots(const Header& h) {
  return static_cast<size_t>(h.num_tokens) * 2 +                   // ids, positions
         static_cast<size_t>(h.num_seqs) * 2 + 1 +                 // starts, context
         static_cast<size_t>(h.num_seqs) * h.max_blocks_per_seq +  // block tables
         static_cast<size_t>(h.num_tokens) * 2 + static_cast<size_t>(h.num_logits);  // slots, rows
}

class Writer {
 public:
  explicit Writer(std::vector<float>& out) : out_(out) {}
  void Ints(absl::Span<const int32_t> v) {
    const size_t at = out_.size();
    out_.resize(at + v.size());
    if (!v.empty()) std::memcpy(out_.data() + at, v.data(), v.size() * sizeof(int32_t));
  }
  void Longs(absl::Span<const int64_t> v) {
    const size_t at = out_.size();
    out_.resize(at + 2 * v.size());
    if (!v.empty()) std::memcpy(out_.data() + at, v.data(), v.size() * sizeof(int64_t));
  }

 private:
  std::vector<float>& out_;
};

class Reader {
 public:
  explicit Reader(const std::vector<float>& in) : in_(in) {}
  void Ints(std::vector<int32_t>& v, size_t n) {
    v.resize(n);
    if (n > 0) std::memcpy(v.data(), in_.data() + at_, n * sizeof(int32_t));
    at_ += n;
  }
  void Longs(std::vector<int64_t>& v, size_t n) {
    v.resize(n);
    if (n > 0) std::memcpy(v.data(), in_.data() + at_, n * sizeof(int64_t));
    at_ += 2 * n;
  }

 private:
  const std::vector<float>& in_;
  size_t at_ = 0;
};

absl::Status Annotate(const absl::Status& s, std::string_view what) {
  if (s.ok()) return s;
  return absl::Status(s.code(), absl::StrCat("tensor-parallel ", std::string(what), ": ",
                                             std::string(s.message())));
}

absl::Status SendHeader(Communicator& comm, Header h) {
  std::vector<float> slots(kHeaderSlots);
  std::memcpy(slots.data(), &h, sizeof(h));
  return Annotate(comm.Broadcast(slots.data(), slots.size(), 0), "step broadcast");
}

}  // namespace

absl::Status BroadcastStep(Communicator& comm, const ForwardBatch& batch, const KvCache& cache) {
  const AttentionBatch& a = batch.attention;
  Header h;
  h.command = kForward;
  h.num_tokens = static_cast<int32_t>(batch.token_ids.size());
  h.num_seqs = a.num_seqs();
  h.max_blocks_per_seq = a.max_blocks_per_seq;
  h.num_logits = static_cast<int32_t>(batch.logits_rows.size());
  h.cache_blocks = cache.num_blocks();
  h.cache_block_size = cache.block_size();
  h.cache_dtype = static_cast<int32_t>(cache.dtype());
  KVFOLD_RETURN_IF_ERROR(SendHeader(comm, h));
  std::vector<float> payload;
  payload.reserve(PayloadSlots(h));
  Writer w(payload);
  w.Ints(batch.token_ids);
  w.Ints(batch.positions);
  w.Ints(a.query_start);
  w.Ints(a.context_len);
  w.Ints(a.block_tables);
  w.Longs(a.slot_mapping);
  w.Ints(batch.logits_rows);
  DCHECK_EQ(payload.size(), PayloadSlots(h));
  return Annotate(comm.Broadcast(payload.data(), payload.size(), 0), "step broadcast");
}

absl::Status BroadcastStop(Communicator& comm) { return SendHeader(comm, Header{}); }

absl::Status FollowSteps(LlamaModel& model, Ops& ops, Communicator& comm) {
  std::unique_ptr<KvCache> cache;
  std::vector<float> slots, payload, logits;
  std::vector<int32_t> ids, positions, starts, context, tables, rows;
  std::vector<int64_t> slot_mapping;
  for (;;) {
    slots.assign(kHeaderSlots, 0.0f);
    KVFOLD_RETURN_IF_ERROR(
        Annotate(comm.Broadcast(slots.data(), slots.size(), 0), "step broadcast"));
    Header h;
    std::memcpy(static_cast<void*>(&h), slots.data(), sizeof(h));
    if (h.command == kStop) return absl::OkStatus();
    if (h.command != kForward || h.num_tokens < 0 || h.num_seqs < 0 || h.max_blocks_per_seq < 0 ||
        h.num_logits < 0 || h.cache_blocks <= 0 || h.cache_block_size <= 0) {
      return absl::InternalError("tensor-parallel follower: malformed step header");
    }
    const DType dtype = static_cast<DType>(h.cache_dtype);
    if (cache == nullptr || cache->num_blocks() != h.cache_blocks ||
        cache->block_size() != h.cache_block_size || cache->dtype() != dtype) {
      cache.reset();  // the old one first: at most one cache in memory
      cache = std::make_unique<KvCache>(ops, model.kv_layer_shapes(), h.cache_blocks,
                                        h.cache_block_size, dtype);
    }
    payload.assign(PayloadSlots(h), 0.0f);
    KVFOLD_RETURN_IF_ERROR(
        Annotate(comm.Broadcast(payload.data(), payload.size(), 0), "step broadcast"));
    Reader r(payload);
    r.Ints(ids, h.num_tokens);
    r.Ints(positions, h.num_tokens);
    r.Ints(starts, h.num_seqs + 1);
    r.Ints(context, h.num_seqs);
    r.Ints(tables, static_cast<size_t>(h.num_seqs) * h.max_blocks_per_seq);
    r.Longs(slot_mapping, h.num_tokens);
    r.Ints(rows, h.num_logits);
    ForwardBatch batch;
    batch.token_ids = ids;
    batch.positions = positions;
    batch.attention.query_start = starts;
    batch.attention.context_len = context;
    batch.attention.block_tables = tables;
    batch.attention.max_blocks_per_seq = h.max_blocks_per_seq;
    batch.attention.slot_mapping = slot_mapping;
    batch.logits_rows = rows;
    logits.resize(static_cast<size_t>(h.num_logits) * model.config().vocab_size);
    KVFOLD_RETURN_IF_ERROR(model.Forward(batch, *cache, logits.data()));
  }
}

}  // namespace kvfold
