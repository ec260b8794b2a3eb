// GgufCheckpoint: config from metadata, tensor names, Q/K row order, dequantization and errors.
// The fixtures are tests/fixtures/models/tiny-llama-linear written as GGUF by
// scripts/dev/make_gguf_goldens.py (F32, and Q8_0 projections with an F16 embedding).
#include "worker/gguf_checkpoint.h"

#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/cpu/quant.h"
#include "tests/testing/paths.h"
#include "worker/checkpoint.h"
#include "worker/model_loader.h"
#include "worker/rope.h"

namespace kvfold {
namespace {

using ::testing::HasSubstr;
using testing::SourcePath;

constexpr char kF32[] = "tests/fixtures/gguf/tiny-llama-linear.f32.gguf";
constexpr char kQ8[] = "tests/fixtures/gguf/tiny-llama-linear.q8_0.gguf";
constexpr char kFolder[] = "tests/fixtures/models/tiny-llama-linear";
// tiny-llama3 with its llama3 RoPE scaling as llama.cpp writes it: a rope_freqs.weight tensor.
constexpr char kLlama3[] = "tests/fixtures/gguf/tiny-llama3.f32.gguf";
constexpr char kLlama3Folder[] = "tests/fixtures/models/tiny-llama3";

std::string ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string WriteTemp(const std::string& name, const std::string& bytes) {
  const std::string path = (std::filesystem::temp_directory_path() / name).string();
  std::ofstream(path, std::ios::binary) << bytes;
  return path;
}

TEST(GgufCheckpointTest, MapsLlamaCppNamesToHuggingFace) {
  EXPECT_EQ(HfTensorName("token_embd.weight"), "model.embed_tokens.weight");
  EXPECT_EQ(HfTensorName("output.weight"), "lm_head.weight");
  EXPECT_EQ(HfTensorName("output_norm.weight"), "model.norm.weight");
  EXPECT_EQ(HfTensorName("blk.12.attn_q.weight"), "model.layers.12.self_attn.q_proj.weight");
  EXPECT_EQ(HfTensorName("blk.0.attn_output.weight"), "model.layers.0.self_attn.o_proj.weight");
  EXPECT_EQ(HfTensorName("blk.3.ffn_norm.weight"),
            "model.layers.3.post_attention_layernorm.weight");
  EXPECT_EQ(HfTensorName("blk.3.ffn_down.weight"), "model.layers.3.mlp.down_proj.weight");
  EXPECT_EQ(HfTensorName("blk.x.attn_q.weight"), std::nullopt);
  EXPECT_EQ(HfTensorName("rope_freqs.weight"), std::nullopt);
}

// The loader serves GGUF blocks to the kernels as they are: the kernels must read llama.cpp's
// layout.
TEST(GgufCheckpointTest, DequantizesLlamaCppBlocks) {
  // Q8_0: scale 0.5 (F16 0x3800), values -3, 0, 7, ...
  std::vector<uint8_t> q8(34, 0);
  q8[0] = 0x00, q8[1] = 0x38, q8[2] = static_cast<uint8_t>(-3), q8[4] = 7;
  std::vector<float> out(32);
  cpu::DequantizeRow(q8.data(), DType::kQ8_0, 32, out.data());
  EXPECT_EQ(out[0], -1.5f);
  EXPECT_EQ(out[1], 0.0f);
  EXPECT_EQ(out[2], 3.5f);
  // Q4_1: scale 2 (0x4000), min -1 (0xBC00); byte j holds value j (low) and j + 16 (high).
  std::vector<uint8_t> q41 = {0x00, 0x40, 0x00, 0xBC};
  q41.resize(20, 0);
  q41[4] = 0x3F;  // low nibble 15, high nibble 3
  cpu::DequantizeRow(q41.data(), DType::kQ4_1, 32, out.data());
  EXPECT_EQ(out[0], 29.0f);  // 2 * 15 - 1
  EXPECT_EQ(out[16], 5.0f);  // 2 * 3 - 1
  EXPECT_EQ(out[1], -1.0f);
  // Q4_0: scale 1 (0x3C00); nibbles are offset by 8.
  std::vector<uint8_t> q40 = {0x00, 0x3C, 0x90};
  q40.resize(18, 0x88);
  cpu::DequantizeRow(q40.data(), DType::kQ4_0, 32, out.data());
  EXPECT_EQ(out[0], -8.0f);  // low nibble 0
  EXPECT_EQ(out[16], 1.0f);  // high nibble 9
  EXPECT_EQ(out[1], 0.0f);
}

TEST(GgufCheckpointTest, ConfigMatchesTheHuggingFaceFolder) {
  auto gguf = GgufCheckpoint::Open(SourcePath(kF32));
  ASSERT_TRUE(gguf.ok()) << gguf.status();
  auto hf = Checkpoint::Open(SourcePath(kFolder));
  ASSERT_TRUE(hf.ok()) << hf.status();
  const ModelConfig& a = (*gguf)->config();
  const ModelConfig& b = (*hf)->config();
  EXPECT_EQ(a.hidden_size, b.hidden_size);
  EXPECT_EQ(a.intermediate_size, b.intermediate_size);
  EXPECT_EQ(a.num_layers, b.num_layers);
  EXPECT_EQ(a.num_heads, b.num_heads);
  EXPECT_EQ(a.num_kv_heads, b.num_kv_heads);
  EXPECT_EQ(a.head_dim, b.head_dim);
  EXPECT_EQ(a.vocab_size, b.vocab_size);
  EXPECT_EQ(a.max_position_embeddings, b.max_position_embeddings);
  EXPECT_FLOAT_EQ(a.rms_norm_eps, b.rms_norm_eps);
  EXPECT_EQ(a.rope_theta, b.rope_theta);
  EXPECT_EQ(a.rope_scaling.type, RopeScaling::Type::kLinear);
  EXPECT_EQ(a.rope_scaling.factor, 2.0);
  EXPECT_EQ(a.tie_word_embeddings, false);
  EXPECT_EQ(a.bos_token_id, b.bos_token_id);
  EXPECT_EQ(a.eos_token_ids, std::vector<int>{2});
  EXPECT_EQ((*gguf)->chat_template(), "{{ messages }}");
}

// Every tensor, Q and K included (whose rows llama.cpp's converter interleaves), equals the
// Hugging Face checkpoint's bit for bit.
TEST(GgufCheckpointTest, F32TensorsEqualTheHuggingFaceCheckpoint) {
  auto gguf = GgufCheckpoint::Open(SourcePath(kF32));
  ASSERT_TRUE(gguf.ok()) << gguf.status();
  auto hf = Checkpoint::Open(SourcePath(kFolder));
  ASSERT_TRUE(hf.ok()) << hf.status();
  const ModelConfig& c = (*hf)->config();
  const int64_t d = c.hidden_size, q = c.num_heads * c.head_dim, kv = c.num_kv_heads * c.head_dim;
  const std::vector<std::tuple<std::string, int64_t, int64_t>> names = {
      {"model.embed_tokens.weight", c.vocab_size, d},
      {"lm_head.weight", c.vocab_size, d},
      {"model.norm.weight", 1, d},
      {"model.layers.1.self_attn.q_proj.weight", q, d},
      {"model.layers.1.self_attn.k_proj.weight", kv, d},
      {"model.layers.0.self_attn.v_proj.weight", kv, d},
      {"model.layers.0.mlp.down_proj.weight", d, c.intermediate_size},
      {"model.layers.0.input_layernorm.weight", 1, d}};
  for (const auto& [name, rows, cols] : names) {
    auto a = (*gguf)->Get(name, rows, cols);
    auto b = (*hf)->Get(name, rows, cols);
    ASSERT_TRUE(a.ok()) << a.status();
    ASSERT_TRUE(b.ok()) << b.status();
    ASSERT_EQ(a->dtype, DType::kF32) << name;
    EXPECT_EQ(std::memcmp(a->data, b->data, a->nbytes()), 0) << name;
  }
  auto wrong = (*gguf)->Get("model.norm.weight", 1, d + 1);
  EXPECT_THAT(wrong.status().message(), HasSubstr("output_norm.weight"));
}

// A tensor-parallel rank's rows: the permuted Q/K rows are copied for the requested heads only,
// and equal the Hugging Face checkpoint's rows (as do rows of a tensor served in place).
TEST(GgufCheckpointTest, RowSlicesEqualTheHuggingFaceRows) {
  auto gguf = GgufCheckpoint::Open(SourcePath(kF32));
  ASSERT_TRUE(gguf.ok()) << gguf.status();
  auto hf = Checkpoint::Open(SourcePath(kFolder));
  ASSERT_TRUE(hf.ok()) << hf.status();
  const ModelConfig& c = (*hf)->config();
  const int64_t d = c.hidden_size, q = c.num_heads * c.head_dim, kv = c.num_kv_heads * c.head_dim;
  for (const auto& [name, rows] : std::vector<std::pair<std::string, int64_t>>{
           {"model.layers.1.self_attn.q_proj.weight", q},
           {"model.layers.0.self_attn.k_proj.weight", kv},
           {"model.layers.0.self_attn.v_proj.weight", kv}}) {
    for (const int64_t begin : {int64_t{0}, rows / 2}) {
      SCOPED_TRACE(name + " from row " + std::to_string(begin));
      auto a = (*gguf)->GetRows(name, rows, d, begin, rows / 2);
      auto b = (*hf)->Get(name, rows, d);
      ASSERT_TRUE(a.ok()) << a.status();
      ASSERT_TRUE(b.ok()) << b.status();
      ASSERT_EQ(a->rows, rows / 2);
      const TensorView expected = b->Rows(begin, rows / 2);
      EXPECT_EQ(std::memcmp(a->data, expected.data, expected.nbytes()), 0);
    }
  }
}

// Q8_0 rows dequantize to within half a quantization step (scale = max|w| / 127) of the original.
TEST(GgufCheckpointTest, Q8TensorsAreCloseToTheOriginal) {
  auto gguf = GgufCheckpoint::Open(SourcePath(kQ8));
  ASSERT_TRUE(gguf.ok()) << gguf.status();
  auto hf = Checkpoint::Open(SourcePath(kFolder));
  ASSERT_TRUE(hf.ok()) << hf.status();
  const ModelConfig& c = (*hf)->config();
  const std::string name = "model.layers.1.self_attn.k_proj.weight";
  const int64_t kv = c.num_kv_heads * c.head_dim;
  auto a = (*gguf)->Get(name, kv, c.hidden_size);
  auto b = (*hf)->Get(name, kv, c.hidden_size);
  ASSERT_TRUE(a.ok() && b.ok());
  ASSERT_EQ(a->dtype, DType::kQ8_0);  // served natively: the kernels read the blocks
  std::vector<float> dequantized(c.hidden_size);
  for (int64_t r = 0; r < kv; ++r) {
    cpu::DequantizeRow(static_cast<const char*>(a->data) + r * a->row_bytes(), a->dtype,
                       c.hidden_size, dequantized.data());
    const float* x = dequantized.data();
    const float* y = b->f32() + r * c.hidden_size;
    float max_abs = 0;
    for (int64_t i = 0; i < c.hidden_size; ++i) max_abs = std::max(max_abs, std::abs(y[i]));
    for (int64_t i = 0; i < c.hidden_size; ++i) {
      ASSERT_NEAR(x[i], y[i], 0.51f * max_abs / 127 + 1e-3f * max_abs) << "row " << r;
    }
  }
  auto embed = (*gguf)->Get("model.embed_tokens.weight", c.vocab_size, c.hidden_size);
  ASSERT_TRUE(embed.ok());
  EXPECT_EQ(embed->dtype, DType::kF16);
}

TEST(GgufCheckpointTest, TruncatedFileNamesTheTensor) {
  const std::string bytes = ReadBytes(SourcePath(kF32));
  const std::string path = WriteTemp("kvfold_truncated.gguf", bytes.substr(0, bytes.size() / 2));
  auto gguf = OpenWeights(path);
  ASSERT_FALSE(gguf.ok());
  EXPECT_THAT(gguf.status().message(), HasSubstr("past the end"));
  EXPECT_THAT(gguf.status().message(), HasSubstr("kvfold_truncated.gguf: tensor "));
  std::filesystem::remove(path);
}

TEST(GgufCheckpointTest, UnsupportedTensorTypeNamesTheTensor) {
  std::string bytes = ReadBytes(SourcePath(kF32));
  // The tensor info: name, n_dims (u32), dims (2 x u64), type (u32), offset (u64).
  const std::string name = "blk.0.ffn_up.weight";
  const size_t at = bytes.find(name);
  ASSERT_NE(at, std::string::npos);
  const uint32_t q4_k = 12;
  std::memcpy(&bytes[at + name.size() + 4 + 16], &q4_k, sizeof(q4_k));
  const std::string path = WriteTemp("kvfold_q4k.gguf", bytes);
  auto gguf = OpenWeights(path);
  ASSERT_FALSE(gguf.ok());
  EXPECT_EQ(gguf.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(gguf.status().message(), HasSubstr("tensor blk.0.ffn_up.weight has ggml type 12"));
  std::filesystem::remove(path);
}

// llama.cpp divides each RoPE frequency by its rope_freqs.weight factor; the folder's config has
// rope_scaling {rope_type: llama3} with the same parameters: both must give the same table.
TEST(GgufCheckpointTest, RopeFreqsGiveTheLlama3Table) {
  auto gguf = GgufCheckpoint::Open(SourcePath(kLlama3));
  ASSERT_TRUE(gguf.ok()) << gguf.status();
  auto hf = Checkpoint::Open(SourcePath(kLlama3Folder));
  ASSERT_TRUE(hf.ok()) << hf.status();
  const ModelConfig& a = (*gguf)->config();
  const ModelConfig& b = (*hf)->config();
  ASSERT_EQ(b.rope_scaling.type, RopeScaling::Type::kLlama3);
  EXPECT_EQ(a.rope_scaling.type, RopeScaling::Type::kNone);  // no scaling metadata
  ASSERT_EQ(a.rope_scaling.freq_factors.size(), static_cast<size_t>(a.head_dim / 2));
  // The fixture scales something: the lowest frequency by the full factor (8).
  EXPECT_EQ(a.rope_scaling.freq_factors.back(), 8.0f);
  EXPECT_EQ(a.rope_scaling.freq_factors.front(), 1.0f);

  const std::vector<float> got = RopeInverseFrequencies(a);
  const std::vector<float> want = RopeInverseFrequencies(b);
  ASSERT_EQ(got.size(), want.size());
  bool any_scaled = false;
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_NEAR(got[i], want[i], 2e-7 * want[i]) << "frequency " << i;  // float rounding
    any_scaled |= a.rope_scaling.freq_factors[i] != 1.0f;
  }
  EXPECT_TRUE(any_scaled);
  const int positions = a.max_position_embeddings;
  const std::vector<float> table_a = RopeCosSinTable(a, positions);
  const std::vector<float> table_b = RopeCosSinTable(b, positions);
  ASSERT_EQ(table_a.size(), table_b.size());
  float worst = 0;
  for (size_t i = 0; i < table_a.size(); ++i) {
    worst = std::max(worst, std::abs(table_a[i] - table_b[i]));
  }
  EXPECT_LE(worst, 1e-5f);  // angles up to 255 rad, frequencies equal to float rounding
}

TEST(GgufCheckpointTest, RopeFreqsOfTheWrongSizeAreAClearError) {
  std::string bytes = ReadBytes(SourcePath(kLlama3));
  // The tensor info: name, n_dims (u32), dims (u64 each): claim 4 values instead of 8.
  const std::string name = "rope_freqs.weight";
  const size_t at = bytes.find(name);
  ASSERT_NE(at, std::string::npos);
  uint64_t dim = 0;
  std::memcpy(&dim, &bytes[at + name.size() + 4], sizeof(dim));
  ASSERT_EQ(dim, 8u);
  dim = 4;
  std::memcpy(&bytes[at + name.size() + 4], &dim, sizeof(dim));
  const std::string path = WriteTemp("kvfold_rope_freqs.gguf", bytes);
  auto gguf = OpenWeights(path);
  ASSERT_FALSE(gguf.ok());
  EXPECT_THAT(gguf.status().message(), HasSubstr("tensor rope_freqs.weight"));
  EXPECT_THAT(gguf.status().message(), HasSubstr("expected 8 F32 values (head_dim / 2)"));
  std::filesystem::remove(path);
}

TEST(GgufCheckpointTest, BadMagicAndMissingFilesAreClearErrors) {
  const std::string path = WriteTemp("kvfold_bad_magic.gguf", std::string(64, 'x'));
  auto bad = OpenWeights(path);
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), HasSubstr("kvfold_bad_magic.gguf"));
  EXPECT_THAT(bad.status().message(), HasSubstr("not a GGUF"));
  std::filesystem::remove(path);
  auto missing = OpenWeights("/nonexistent/model.gguf");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  auto folder = OpenWeights(SourcePath(kFolder));
  EXPECT_TRUE(folder.ok()) << folder.status();
}

}  // namespace
}  // namespace kvfold
