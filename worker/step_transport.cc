#include "worker/step_transport.h"

#include <memory>

#include "worker/status_macros.h"

namespace kvfold {
namespace {

template <typename T>
std::vector<T> Copy(absl::Span<const T> s) {
  return std::vector<T>(s.begin(), s.end());
}

}  // namespace

StepMessage StepMessage::Of(const ForwardBatch& batch, const KvCache& cache) {
  StepMessage m;
  m.token_ids = Copy(batch.token_ids);
  m.positions = Copy(batch.positions);
  m.query_start = Copy(batch.attention.query_start);
  m.context_len = Copy(batch.attention.context_len);
  m.block_tables = Copy(batch.attention.block_tables);
  m.max_blocks_per_seq = batch.attention.max_blocks_per_seq;
  m.slot_mapping = Copy(batch.attention.slot_mapping);
  m.logits_rows = Copy(batch.logits_rows);
  m.cache_blocks = cache.num_blocks();
  m.cache_block_size = cache.block_size();
  m.cache_dtype = static_cast<int32_t>(cache.dtype());
  return m;
}

StepMessage StepMessage::Finish() {
  StepMessage m;
  m.finish = true;
  return m;
}

absl::Status StepMessage::Validate() const {
  if (finish) return absl::OkStatus();
  const size_t tokens = token_ids.size(), seqs = context_len.size();
  if (positions.size() != tokens || slot_mapping.size() != tokens ||
      query_start.size() != seqs + 1 || max_blocks_per_seq < 0 ||
      block_tables.size() != seqs * static_cast<size_t>(max_blocks_per_seq) || cache_blocks <= 0 ||
      cache_block_size <= 0) {
    return absl::InternalError("tensor-parallel follower: malformed step");
  }
  return absl::OkStatus();
}

absl::Status FollowSteps(LlamaModel& model, Ops& ops, StepSource& source) {
  std::unique_ptr<KvCache> cache;
  std::vector<float> logits;
  StepMessage step;
  for (;;) {
    KVFOLD_RETURN_IF_ERROR(source.Next(step));
    if (step.finish) return absl::OkStatus();
    KVFOLD_RETURN_IF_ERROR(step.Validate());
    const DType dtype = static_cast<DType>(step.cache_dtype);
    if (cache == nullptr || cache->num_blocks() != step.cache_blocks ||
        cache->block_size() != step.cache_block_size || cache->dtype() != dtype) {
      cache.reset();  // the old one first: at most one cache in memory
      // The leader planned the pool on its device: a follower's may hold less (an error here).
      KVFOLD_ASSIGN_OR_RETURN(KvCache created,
                              KvCache::Create(ops, model.kv_layer_shapes(), step.cache_blocks,
                                              step.cache_block_size, dtype));
      cache = std::make_unique<KvCache>(std::move(created));
    }
    logits.resize(step.logits_rows.size() * static_cast<size_t>(model.config().vocab_size));
    KVFOLD_RETURN_IF_ERROR(model.Forward(step.batch(), *cache, logits.data()));
  }
}

}  // namespace kvfold
