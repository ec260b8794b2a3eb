// The GGUF metadata reader on a file the `gguf` package wrote (every value type, nested arrays,
// tensor infos), on the default model's GGUF when it is cached, and on corrupt headers; and
// tokenizers loaded from GGUF files.
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <variant>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/tokenizer/tokenizer.h"
#include "tests/testing/paths.h"
#include "tests/unit/tokenizer_expectations.h"
#include "worker/gguf_metadata.h"

namespace kvfold {
namespace {

using ::kvfold::testing::SourcePath;
using ::testing::HasSubstr;

const std::string kFixture = "tests/fixtures/gguf/stories260K_spm.gguf";

std::string FixtureBytes() { return testing::ReadTextFile(SourcePath(kFixture)); }

TEST(GgufMetadataTest, ReadsEveryValueType) {
  auto file = GgufFile::Open(SourcePath(kFixture));
  ASSERT_TRUE(file.ok()) << file.status();
  const GgufFile& f = **file;
  EXPECT_EQ(f.header().version, 3u);
  EXPECT_EQ(f.GetString("general.architecture").value(), "llama");
  EXPECT_EQ(f.GetString("kvfold.test.string").value(), "h\u00e9llo");
  EXPECT_EQ(f.GetUint("kvfold.test.u8").value(), 200u);
  EXPECT_EQ(f.GetUint("kvfold.test.u16").value(), 60000u);
  EXPECT_EQ(f.GetUint("kvfold.test.u32").value(), 4000000000u);
  EXPECT_EQ(f.GetUint("kvfold.test.u64").value(), (uint64_t{1} << 63) + 5);
  EXPECT_EQ(std::get<int64_t>(f.Find("kvfold.test.i8")->value), -100);
  EXPECT_EQ(std::get<int64_t>(f.Find("kvfold.test.i16")->value), -30000);
  EXPECT_EQ(std::get<int64_t>(f.Find("kvfold.test.i32")->value), -2000000000);
  EXPECT_EQ(std::get<int64_t>(f.Find("kvfold.test.i64")->value), -(int64_t{1} << 62));
  EXPECT_EQ(std::get<double>(f.Find("kvfold.test.f32")->value), 1.5);
  EXPECT_EQ(std::get<double>(f.Find("kvfold.test.f64")->value), -2.25);
  EXPECT_TRUE(f.GetBool("kvfold.test.bool").value());
  const GgufArray* ints = std::get_if<GgufArray>(&f.Find("kvfold.test.ints")->value);
  ASSERT_NE(ints, nullptr);
  EXPECT_EQ(ints->size(), 3u);
  const GgufArray* nested = std::get_if<GgufArray>(&f.Find("kvfold.test.nested")->value);
  ASSERT_NE(nested, nullptr);
  ASSERT_EQ(nested->arrays.size(), 2u);
  EXPECT_EQ(nested->arrays[1].size(), 1u);
  EXPECT_EQ(f.GetArray("tokenizer.ggml.tokens", GgufType::kString).value()->strings.size(), 513u);
  EXPECT_EQ(f.GetArray("tokenizer.ggml.scores", GgufType::kFloat32).value()->floats.size(), 513u);
}

TEST(GgufMetadataTest, ReadsTensorInfos) {
  auto file = GgufFile::Open(SourcePath(kFixture));
  ASSERT_TRUE(file.ok()) << file.status();
  const std::vector<GgufTensorInfo>& tensors = (*file)->header().tensors;
  ASSERT_EQ(tensors.size(), 2u);
  EXPECT_EQ(tensors[0].name, "tiny.weight");
  EXPECT_EQ(tensors[0].dims, (std::vector<uint64_t>{4, 2}));  // ggml order
  EXPECT_EQ(tensors[0].ggml_type, 0u);                        // F32
  EXPECT_EQ(tensors[1].dims, (std::vector<uint64_t>{3}));
  EXPECT_EQ(tensors[1].ggml_type, 1u);  // F16
  const std::string_view data = (*file)->tensor_data();
  ASSERT_GE(data.size(), tensors[0].offset + 8 * sizeof(float));
  float values[8];
  std::memcpy(values, data.data() + tensors[0].offset, sizeof(values));
  EXPECT_EQ(values[7], 7.0f);
}

TEST(GgufMetadataTest, WrongTypesAndMissingKeysAreClearErrors) {
  auto file = GgufFile::Open(SourcePath(kFixture));
  ASSERT_TRUE(file.ok()) << file.status();
  absl::Status missing = (*file)->GetString("no.such.key").status();
  EXPECT_EQ(missing.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(missing.message(), HasSubstr("no.such.key"));
  absl::Status wrong = (*file)->GetUint("kvfold.test.string").status();
  EXPECT_EQ(wrong.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(wrong.message(), HasSubstr("stories260K_spm.gguf"));
  EXPECT_THAT(wrong.message(), HasSubstr("string"));
  EXPECT_FALSE((*file)->GetUint("kvfold.test.i8").ok());  // negative
}

// Every truncation of the header fails cleanly, naming the source; so do corrupt fields.
TEST(GgufMetadataTest, TruncatedAndCorruptHeadersAreInvalidArgument) {
  const std::string bytes = FixtureBytes();
  auto whole = ParseGgufHeader(bytes, "fixture");
  ASSERT_TRUE(whole.ok()) << whole.status();
  for (size_t n = 0; n < whole->data_offset; n += 7) {
    absl::Status status = ParseGgufHeader(std::string_view(bytes).substr(0, n), "cut").status();
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << n;
    EXPECT_THAT(status.message(), HasSubstr("cut")) << n;
  }
  std::string bad_magic = bytes;
  bad_magic[0] = 'X';
  EXPECT_THAT(ParseGgufHeader(bad_magic, "m").status().message(), HasSubstr("not a GGUF"));
  std::string v1 = bytes;
  v1[4] = 1;
  EXPECT_THAT(ParseGgufHeader(v1, "v").status().message(), HasSubstr("version 1"));
  std::string huge_kv = bytes;
  std::memset(&huge_kv[16], 0xFF, 8);  // kv count
  EXPECT_FALSE(ParseGgufHeader(huge_kv, "kv").ok());
  std::string huge_string = bytes;
  std::memset(&huge_string[24], 0x7F, 8);  // the first key's length
  EXPECT_THAT(ParseGgufHeader(huge_string, "s").status().message(), HasSubstr("past the end"));
}

TEST(GgufMetadataTest, MissingFileIsNotFound) {
  EXPECT_EQ(GgufFile::Open("/nonexistent/x.gguf").status().code(), absl::StatusCode::kNotFound);
}

TEST(GgufMetadataTest, ReadsTheDefaultModelsHeader) {
  const std::string path = testing::ModelCachePath("SmolLM2-135M-Instruct.Q4_1.gguf");
  if (!std::filesystem::exists(path)) GTEST_SKIP() << path << " is absent (scripts/setup.sh)";
  auto file = GgufFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->header().tensors.size(), 272u);
  EXPECT_EQ((*file)->GetString("tokenizer.ggml.model").value(), "gpt2");
  EXPECT_EQ((*file)->GetString("tokenizer.ggml.pre").value(), "smollm");
  EXPECT_EQ((*file)->GetUint("llama.block_count").value(), 30u);
}

TEST(GgufTokenizerTest, DefaultModelSpecialTokens) {
  const std::string path = testing::ModelCachePath("SmolLM2-135M-Instruct.Q4_1.gguf");
  if (!std::filesystem::exists(path)) GTEST_SKIP() << path << " is absent (scripts/setup.sh)";
  auto tokenizer = Tokenizer::FromFile(path);
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  EXPECT_EQ((*tokenizer)->vocab_size(), 49152);
  EXPECT_EQ((*tokenizer)->bos_id(), 1);
  EXPECT_EQ((*tokenizer)->eos_id(), 2);
  EXPECT_EQ((*tokenizer)->Encode("<|im_start|>user", true).value(),
            (std::vector<int32_t>{1, 4093}));  // add_bos_token is false
}

TEST(GgufTokenizerTest, SpmFixtureAddsBosAndMatchesUserDefinedTokens) {
  auto tokenizer = Tokenizer::FromFile(SourcePath(kFixture));
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  EXPECT_EQ((*tokenizer)->bos_id(), 1);
  const std::vector<int32_t> ids = (*tokenizer)->Encode("a<mark>b", true).value();
  ASSERT_GE(ids.size(), 3u);
  EXPECT_EQ(ids.front(), 1);
  EXPECT_NE(std::find(ids.begin(), ids.end(), 512), ids.end());  // <mark> whole
  EXPECT_FALSE((*tokenizer)->IsSpecial(512));
  EXPECT_TRUE((*tokenizer)->IsSpecial(0));  // <unk>
}

TEST(GgufTokenizerTest, UnsupportedModelTypeIsUnimplemented) {
  // The fixture with tokenizer.ggml.model patched from "llama" to "xlama" (same length).
  std::string bytes = FixtureBytes();
  const size_t at = bytes.find("llama", bytes.find("tokenizer.ggml.model"));
  ASSERT_NE(at, std::string::npos);
  bytes.replace(at, 5, "xlama");
  const std::string path =
      ::testing::TempDir() + "/kvfold_gguf_" + std::to_string(getpid()) + ".gguf";
  std::ofstream(path, std::ios::binary) << bytes;
  absl::Status status = Tokenizer::FromFile(path).status();
  std::remove(path.c_str());
  EXPECT_EQ(status.code(), absl::StatusCode::kUnimplemented) << status;
  EXPECT_THAT(status.message(), HasSubstr("xlama"));
}

}  // namespace
}  // namespace kvfold
