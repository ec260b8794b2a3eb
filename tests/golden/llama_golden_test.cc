// Our CPU forward pass against logits written by Hugging Face transformers (float32, eager
// attention) for four checkpoints: stories260K (real, F32, tied), tiny-qwen2 (QKV biases, BF16),
// tiny-llama3 (GQA, explicit head_dim, llama3 RoPE scaling, F16, sharded), tiny-llama-linear (MHA,
// linear RoPE scaling, transformers-5 config layout). See tests/fixtures/golden/README.md.
//
// Tolerance: both sides compute in F32 with different summation orders; the generator's own
// float64 re-check puts the reference's error at ~1e-6 relative to the largest logit. We allow
// 2e-5 x max|logit| + 5e-5 (about 10x that), far below what a wrong bias, norm weight, RoPE
// frequency or head mapping does (0.1 to 5, measured by the generator).
#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/cpu_ops.h"
#include "tests/testing/model_fixtures.h"
#include "tests/testing/paths.h"
#include "worker/checkpoint.h"
#include "worker/llama_model.h"
#include "worker/safetensors.h"
#include "worker/sampler.h"
#include "worker/sequence_runner.h"

namespace kvfold {
namespace {

struct Golden {
  std::vector<std::vector<int32_t>> inputs;
  std::vector<std::vector<float>> logits;  // per sequence, [len x vocab]
  std::vector<int32_t> greedy_prompt, greedy_output;
  float max_abs_logit = 0;
};

Golden ReadGolden(const std::string& path) {
  auto file = SafetensorsFile::Open(path);
  EXPECT_TRUE(file.ok()) << file.status();
  Golden g;
  if (!file.ok()) return g;
  const auto& meta = (*file)->metadata();
  EXPECT_EQ(meta.at("format_version"), "1");
  const int num_seqs = std::stoi(meta.at("num_seqs"));
  for (int i = 0; i < num_seqs; ++i) {
    g.inputs.push_back(testing::GoldenIds(**file, "seq" + std::to_string(i) + ".input_ids"));
    g.logits.push_back(testing::GoldenFloats(**file, "seq" + std::to_string(i) + ".logits"));
  }
  g.greedy_prompt = testing::GoldenIds(**file, "greedy.prompt_ids");
  g.greedy_output = testing::GoldenIds(**file, "greedy.output_ids");
  g.max_abs_logit = std::stof(meta.at("max_abs_logit"));
  return g;
}

class GoldenTest : public ::testing::TestWithParam<std::pair<std::string, std::string>> {
 protected:
  void SetUp() override {
    const auto& [model_dir, golden] = GetParam();
    golden_ = ReadGolden(testing::SourcePath("tests/fixtures/golden/" + golden));
    ASSERT_FALSE(golden_.inputs.empty());
    auto model = testing::LoadModel(testing::SourcePath(model_dir), *ops_);
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = *std::move(model);
    tolerance_ = 2e-5f * golden_.max_abs_logit + 5e-5f;
  }

  void ExpectLogitsNear(const float* got, const std::vector<float>& want, size_t row_begin,
                        size_t rows, const std::string& what) {
    const size_t vocab = model_->config().vocab_size;
    for (size_t i = 0; i < rows * vocab; ++i) {
      ASSERT_NEAR(got[i], want[row_begin * vocab + i], tolerance_)
          << what << ": position " << row_begin + i / vocab << ", token " << i % vocab;
    }
  }

  std::unique_ptr<Ops> ops_ = NewCpuOps(2);
  std::unique_ptr<LlamaModel> model_;
  Golden golden_;
  float tolerance_ = 0;
};

TEST_P(GoldenTest, PrefillLogitsMatchEveryPosition) {
  for (size_t s = 0; s < golden_.inputs.size(); ++s) {
    SequenceRunner runner(*model_, *ops_, static_cast<int32_t>(golden_.inputs[s].size()));
    auto logits = runner.Append(golden_.inputs[s], /*all_logits=*/true);
    ASSERT_TRUE(logits.ok()) << logits.status();
    ExpectLogitsNear(logits->data(), golden_.logits[s], 0, golden_.inputs[s].size(),
                     "sequence " + std::to_string(s));
  }
}

// Half the prompt as one prefill, then one token per step: the decode path reads the K/V that
// earlier steps wrote through the block table.
TEST_P(GoldenTest, ChunkedPrefillThenDecodeMatches) {
  const std::vector<int32_t>& ids = golden_.inputs.back();
  SequenceRunner runner(*model_, *ops_, static_cast<int32_t>(ids.size()));
  const size_t half = ids.size() / 2;
  auto first = runner.Append(absl::MakeSpan(ids).subspan(0, half), true);
  ASSERT_TRUE(first.ok()) << first.status();
  ExpectLogitsNear(first->data(), golden_.logits.back(), 0, half, "prefill chunk");
  for (size_t p = half; p < ids.size(); ++p) {
    auto step = runner.Append(absl::MakeSpan(ids).subspan(p, 1));
    ASSERT_TRUE(step.ok()) << step.status();
    ExpectLogitsNear(step->data(), golden_.logits.back(), p, 1, "decode");
  }
}

// Every sequence in one batch: each sequence's logits equal the reference and are bit-identical
// to running it alone (no reduction depends on the batch).
TEST_P(GoldenTest, BatchedSequencesMatchAndAreBatchInvariant) {
  const int32_t vocab = model_->config().vocab_size, block = 16;
  std::vector<int32_t> tokens, positions, query_start = {0}, context_len, tables, rows;
  std::vector<int64_t> slots;
  int32_t max_blocks = 0, total_blocks = 0;
  for (const auto& seq : golden_.inputs) {
    max_blocks = std::max<int32_t>(max_blocks, (seq.size() + block - 1) / block);
  }
  for (const auto& seq : golden_.inputs) {
    const int32_t n = static_cast<int32_t>(seq.size()), base = total_blocks;
    total_blocks += (n + block - 1) / block;
    for (int32_t b = 0; b < max_blocks; ++b)
      tables.push_back(base + std::min(b, total_blocks - base - 1));
    for (int32_t p = 0; p < n; ++p) {
      tokens.push_back(seq[p]);
      positions.push_back(p);
      slots.push_back(int64_t{base} * block + p);
      rows.push_back(static_cast<int32_t>(tokens.size()) - 1);
    }
    query_start.push_back(static_cast<int32_t>(tokens.size()));
    context_len.push_back(n);
  }
  KvCache cache(*ops_, model_->config(), total_blocks, block);
  ForwardBatch batch{tokens, positions,
                     AttentionBatch{query_start, context_len, tables, max_blocks, slots}, rows};
  std::vector<float> logits(rows.size() * static_cast<size_t>(vocab));
  ASSERT_TRUE(model_->Forward(batch, cache, logits.data()).ok());
  for (size_t s = 0; s < golden_.inputs.size(); ++s) {
    const float* got = logits.data() + static_cast<size_t>(query_start[s]) * vocab;
    ExpectLogitsNear(got, golden_.logits[s], 0, golden_.inputs[s].size(),
                     "batched sequence " + std::to_string(s));
    SequenceRunner alone(*model_, *ops_, static_cast<int32_t>(golden_.inputs[s].size()));
    auto solo = alone.Append(golden_.inputs[s], true);
    ASSERT_TRUE(solo.ok());
    for (size_t i = 0; i < solo->size(); ++i) {
      ASSERT_EQ((*solo)[i], got[i]) << "sequence " << s << " differs when batched, element " << i;
    }
  }
}

TEST_P(GoldenTest, GreedyTokensMatch) {
  const int32_t total = golden_.greedy_prompt.size() + golden_.greedy_output.size();
  SequenceRunner runner(*model_, *ops_, total);
  auto logits = runner.Append(golden_.greedy_prompt);
  ASSERT_TRUE(logits.ok()) << logits.status();
  std::vector<int32_t> out;
  while (out.size() < golden_.greedy_output.size()) {
    out.push_back(ArgMax(*logits));
    if (out.size() == golden_.greedy_output.size()) break;
    logits = runner.Append(absl::MakeConstSpan(&out.back(), 1));
    ASSERT_TRUE(logits.ok()) << logits.status();
  }
  EXPECT_EQ(out, golden_.greedy_output);
}

INSTANTIATE_TEST_SUITE_P(
    Models, GoldenTest,
    ::testing::Values(std::pair{"models/stories260K", "stories260K.safetensors"},
                      std::pair{"tests/fixtures/models/tiny-qwen2", "tiny-qwen2.safetensors"},
                      std::pair{"tests/fixtures/models/tiny-llama3", "tiny-llama3.safetensors"},
                      std::pair{"tests/fixtures/models/tiny-llama-linear",
                                "tiny-llama-linear.safetensors"}),
    [](const auto& info) {
      std::string name = info.param.second.substr(0, info.param.second.find('.'));
      std::replace(name.begin(), name.end(), '-', '_');
      return name;
    });

}  // namespace
}  // namespace kvfold
