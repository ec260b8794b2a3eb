#include "server/cluster/step_proto.h"

namespace kvfold::cluster {
namespace {

namespace pb = kvfold::internal::v1;

template <typename T>
void Put(const std::vector<T>& from, google::protobuf::RepeatedField<T>* to) {
  to->Add(from.begin(), from.end());
}

template <typename T>
std::vector<T> Take(const google::protobuf::RepeatedField<T>& from) {
  return std::vector<T>(from.begin(), from.end());
}

}  // namespace

pb::Step ToProto(const StepMessage& m) {
  pb::Step p;
  p.set_finish(m.finish);
  if (m.finish) return p;
  Put(m.token_ids, p.mutable_token_ids());
  Put(m.positions, p.mutable_positions());
  Put(m.query_start, p.mutable_query_start());
  Put(m.context_len, p.mutable_context_len());
  Put(m.block_tables, p.mutable_block_tables());
  p.set_max_blocks_per_seq(m.max_blocks_per_seq);
  Put(m.slot_mapping, p.mutable_slot_mapping());
  Put(m.logits_rows, p.mutable_logits_rows());
  p.mutable_cache()->set_num_blocks(m.cache_blocks);
  p.mutable_cache()->set_block_size(m.cache_block_size);
  p.mutable_cache()->set_dtype(m.cache_dtype);
  return p;
}

StepMessage FromProto(const pb::Step& p) {
  if (p.finish()) return StepMessage::Finish();
  StepMessage m;
  m.token_ids = Take(p.token_ids());
  m.positions = Take(p.positions());
  m.query_start = Take(p.query_start());
  m.context_len = Take(p.context_len());
  m.block_tables = Take(p.block_tables());
  m.max_blocks_per_seq = p.max_blocks_per_seq();
  m.slot_mapping = Take(p.slot_mapping());
  m.logits_rows = Take(p.logits_rows());
  m.cache_blocks = p.cache().num_blocks();
  m.cache_block_size = p.cache().block_size();
  m.cache_dtype = p.cache().dtype();
  return m;
}

}  // namespace kvfold::cluster
