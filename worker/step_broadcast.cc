#include "worker/step_broadcast.h"

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/str_cat.h"
#include "glog/logging.h"
#include "worker/status_macros.h"

namespace kvfold {
namespace {

enum Command : int32_t { kStop = 0, kForward = 1, kKeepalive = 2 };

// The header: every field an int32 in one float slot.
struct Header {
  int32_t command = kStop;
  int32_t num_tokens = 0, num_seqs = 0, max_blocks_per_seq = 0, num_logits = 0;
  int32_t cache_blocks = 0, cache_block_size = 0, cache_dtype = 0;
};
constexpr size_t kHeaderSlots = sizeof(Header) / sizeof(int32_t);
static_assert(sizeof(float) == sizeof(int32_t));

// Slots of the arrays after the header.
size_t PayloadSlots(const Header& h) {
  return static_cast<size_t>(h.num_tokens) * 2 +                   // ids, positions
         static_cast<size_t>(h.num_seqs) * 2 + 1 +                 // starts, context
         static_cast<size_t>(h.num_seqs) * h.max_blocks_per_seq +  // block tables
         static_cast<size_t>(h.num_tokens) * 2 + static_cast<size_t>(h.num_logits);  // slots, rows
}

class Writer {
 public:
  explicit Writer(std::vector<float>& out) : out_(out) {}
  template <typename T>
  void Put(const std::vector<T>& v) {
    static_assert(sizeof(T) % sizeof(float) == 0);
    const size_t at = out_.size();
    out_.resize(at + v.size() * (sizeof(T) / sizeof(float)));
    if (!v.empty()) std::memcpy(out_.data() + at, v.data(), v.size() * sizeof(T));
  }

 private:
  std::vector<float>& out_;
};

class Reader {
 public:
  explicit Reader(const std::vector<float>& in) : in_(in) {}
  template <typename T>
  void Take(std::vector<T>& v, size_t n) {
    v.resize(n);
    if (n > 0) std::memcpy(v.data(), in_.data() + at_, n * sizeof(T));
    at_ += n * (sizeof(T) / sizeof(float));
  }

 private:
  const std::vector<float>& in_;
  size_t at_ = 0;
};

absl::Status Annotate(const absl::Status& s) {
  if (s.ok()) return s;
  return absl::Status(s.code(),
                      absl::StrCat("tensor-parallel step broadcast: ", std::string(s.message())));
}

absl::Status BroadcastHeader(Communicator& comm, Header& h) {
  std::vector<float> slots(kHeaderSlots);
  std::memcpy(slots.data(), &h, sizeof(h));
  KVFOLD_RETURN_IF_ERROR(Annotate(comm.Broadcast(slots.data(), slots.size(), 0)));
  std::memcpy(static_cast<void*>(&h), slots.data(), sizeof(h));
  return absl::OkStatus();
}

}  // namespace

absl::Status BroadcastStepSink::Send(const ForwardBatch& batch, const KvCache& cache) {
  const StepMessage m = StepMessage::Of(batch, cache);
  Header h;
  h.command = kForward;
  h.num_tokens = m.num_tokens();
  h.num_seqs = m.num_seqs();
  h.max_blocks_per_seq = m.max_blocks_per_seq;
  h.num_logits = static_cast<int32_t>(m.logits_rows.size());
  h.cache_blocks = m.cache_blocks;
  h.cache_block_size = m.cache_block_size;
  h.cache_dtype = m.cache_dtype;
  KVFOLD_RETURN_IF_ERROR(BroadcastHeader(comm_, h));
  std::vector<float> payload;
  payload.reserve(PayloadSlots(h));
  Writer w(payload);
  w.Put(m.token_ids);
  w.Put(m.positions);
  w.Put(m.query_start);
  w.Put(m.context_len);
  w.Put(m.block_tables);
  w.Put(m.slot_mapping);
  w.Put(m.logits_rows);
  DCHECK_EQ(payload.size(), PayloadSlots(h));
  return Annotate(comm_.Broadcast(payload.data(), payload.size(), 0));
}

absl::Status BroadcastStepSink::Finish() {
  Header stop;
  return BroadcastHeader(comm_, stop);
}

absl::Status BroadcastStepSink::Keepalive() {
  Header h;
  h.command = kKeepalive;
  return BroadcastHeader(comm_, h);
}

absl::Status BroadcastStepSource::Next(StepMessage& step) {
  Header h;
  do {
    KVFOLD_RETURN_IF_ERROR(BroadcastHeader(comm_, h));
  } while (h.command == kKeepalive);
  if (h.command == kStop) {
    step = StepMessage::Finish();
    return absl::OkStatus();
  }
  if (h.command != kForward || h.num_tokens < 0 || h.num_seqs < 0 || h.max_blocks_per_seq < 0 ||
      h.num_logits < 0) {
    return absl::InternalError("tensor-parallel follower: malformed step header");
  }
  std::vector<float> payload(PayloadSlots(h));
  KVFOLD_RETURN_IF_ERROR(Annotate(comm_.Broadcast(payload.data(), payload.size(), 0)));
  step.finish = false;
  Reader r(payload);
  r.Take(step.token_ids, h.num_tokens);
  r.Take(step.positions, h.num_tokens);
  r.Take(step.query_start, h.num_seqs + 1);
  r.Take(step.context_len, h.num_seqs);
  r.Take(step.block_tables, static_cast<size_t>(h.num_seqs) * h.max_blocks_per_seq);
  r.Take(step.slot_mapping, h.num_tokens);
  r.Take(step.logits_rows, h.num_logits);
  step.max_blocks_per_seq = h.max_blocks_per_seq;
  step.cache_blocks = h.cache_blocks;
  step.cache_block_size = h.cache_block_size;
  step.cache_dtype = h.cache_dtype;
  return absl::OkStatus();
}

}  // namespace kvfold
