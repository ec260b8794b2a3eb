#include "worker/safetensors.h"

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/paths.h"
#include "tests/testing/safetensors_writer.h"

namespace kvfold {
namespace {

using ::testing::ElementsAre;
using testing::F32Bytes;
using ::testing::HasSubstr;
using ::testing::Pair;
using testing::RawSafetensors;
using testing::SafetensorsBytes;
using testing::ScratchDir;
using testing::TensorSpec;
using testing::WriteFile;

constexpr char kSource[] = "/models/broken/model.safetensors";

float FloatAt(const void* data, size_t i) {
  float value;
  std::memcpy(&value, static_cast<const char*>(data) + i * sizeof(float), sizeof(float));
  return value;
}

TEST(SafetensorsTest, OpensStories260K) {
  auto file = SafetensorsFile::Open(testing::SourcePath("models/stories260K/model.safetensors"));
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->tensors().size(), 47u);  // 5 layers x 9, embeddings, final norm
  EXPECT_THAT((*file)->metadata(), ElementsAre(Pair("format", "pt")));
  const SafetensorsTensor* embed = (*file)->Find("model.embed_tokens.weight");
  ASSERT_NE(embed, nullptr);
  EXPECT_EQ(embed->dtype, DType::kF32);
  EXPECT_THAT(embed->shape, ElementsAre(512, 64));
  EXPECT_EQ(embed->nbytes, 512u * 64 * 4);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(embed->data) % alignof(float), 0u);
  // The first values, as numpy reads them from the file.
  EXPECT_FLOAT_EQ(FloatAt(embed->data, 0), -0.29474878f);
  EXPECT_FLOAT_EQ(FloatAt(embed->data, 3), 0.34057361f);
  const SafetensorsTensor* norm = (*file)->Find("model.norm.weight");
  ASSERT_NE(norm, nullptr);
  EXPECT_THAT(norm->shape, ElementsAre(64));
  EXPECT_FLOAT_EQ(FloatAt(norm->data, 0), 2.4583089f);
  EXPECT_EQ((*file)->Find("lm_head.weight"), nullptr);
}

TEST(SafetensorsTest, ParsesEveryDtypeMetadataAndEmptyTensors) {
  std::map<std::string, std::string> metadata_in = {{"format", "pt"}, {"note", "x"}};
  const std::string bytes = SafetensorsBytes({{"a", "F32", {2, 3}, F32Bytes({1, 2, 3, 4, 5, 6})},
                                              {"b", "F16", {4}, std::string(8, '\1')},
                                              {"c", "BF16", {1, 1, 2}, std::string(4, '\2')},
                                              {"empty", "F32", {0, 7}, ""},
                                              {"scalar", "F32", {}, F32Bytes({9})}},
                                             metadata_in);
  std::map<std::string, std::string> metadata;
  auto tensors = ParseSafetensors(bytes, kSource, &metadata);
  ASSERT_TRUE(tensors.ok()) << tensors.status();
  EXPECT_EQ(metadata, metadata_in);
  ASSERT_EQ(tensors->size(), 5u);
  const std::vector<SafetensorsTensor>& t = *tensors;
  EXPECT_EQ(t[0].name, "a");
  EXPECT_EQ(t[0].dtype, DType::kF32);
  EXPECT_THAT(t[0].shape, ElementsAre(2, 3));
  EXPECT_EQ(t[0].nbytes, 24u);
  EXPECT_FLOAT_EQ(FloatAt(t[0].data, 5), 6.0f);
  EXPECT_EQ(t[1].dtype, DType::kF16);
  EXPECT_EQ(t[1].nbytes, 8u);
  EXPECT_EQ(t[2].dtype, DType::kBF16);
  EXPECT_THAT(t[2].shape, ElementsAre(1, 1, 2));
  EXPECT_EQ(t[3].nbytes, 0u);
  EXPECT_TRUE(t[4].shape.empty());
  EXPECT_FLOAT_EQ(FloatAt(t[4].data, 0), 9.0f);
}

TEST(SafetensorsTest, EmptyHeaderHasNoTensors) {
  auto tensors = ParseSafetensors(RawSafetensors("{}", ""), kSource);
  ASSERT_TRUE(tensors.ok()) << tensors.status();
  EXPECT_TRUE(tensors->empty());
}

struct BrokenCase {
  std::string label;
  std::string bytes;
  absl::StatusCode code;
  std::string tensor;   // named in the message, when the error is about one
  std::string message;  // a fragment of the message
};

// A header with one tensor entry `entry` followed by `data_size` zero bytes.
std::string OneTensor(const std::string& entry, size_t data_size = 16) {
  return RawSafetensors(R"({"w": )" + entry + "}", std::string(data_size, '\0'));
}

std::vector<BrokenCase> BrokenCases() {
  const auto kInvalid = absl::StatusCode::kInvalidArgument;
  const std::string valid = SafetensorsBytes({{"w", "F32", {2, 2}, F32Bytes({1, 2, 3, 4})}});
  return {
      {"empty file", "", kInvalid, "", "too short"},
      {"truncated length", std::string(5, '\0'), kInvalid, "", "too short"},
      {"truncated header", valid.substr(0, 20), kInvalid, "", "past the end"},
      {"length beyond file", RawSafetensors("{}", "", 4096), kInvalid, "", "past the end"},
      {"length beyond limit", RawSafetensors("{}", "", uint64_t{1} << 40), kInvalid, "", "limit"},
      {"length wraps", RawSafetensors("{}", "", ~uint64_t{0}), kInvalid, "", "limit"},
      {"not json", RawSafetensors("{\"w\": {", ""), kInvalid, "", "not valid JSON"},
      {"binary header", RawSafetensors(std::string("\xff\xfe\0\x01", 4), ""), kInvalid, "",
       "not valid JSON"},
      {"header is a list", RawSafetensors("[1, 2]", ""), kInvalid, "", "must be a JSON object"},
      {"deep nesting", RawSafetensors(std::string(100000, '['), ""), kInvalid, "", "deeper"},
      {"nested shape", OneTensor(R"({"dtype": "F32", "shape": [[[[[[[[[4]]]]]]]]]})"), kInvalid, "",
       "deeper"},
      {"entry not an object", OneTensor("3"), kInvalid, "w", "must be an object"},
      {"no dtype", OneTensor(R"({"shape": [4], "data_offsets": [0, 16]})"), kInvalid, "w", "dtype"},
      {"no offsets", OneTensor(R"({"dtype": "F32", "shape": [4]})"), kInvalid, "w", "data_offsets"},
      {"dtype not a string", OneTensor(R"({"dtype": 1, "shape": [4], "data_offsets": [0, 16]})"),
       kInvalid, "w", "dtype"},
      {"shape a string", OneTensor(R"({"dtype": "F32", "shape": "4", "data_offsets": [0, 16]})"),
       kInvalid, "w", "shape"},
      {"negative dim", OneTensor(R"({"dtype": "F32", "shape": [-4], "data_offsets": [0, 16]})"),
       kInvalid, "w", "shape"},
      {"float dim", OneTensor(R"({"dtype": "F32", "shape": [4.0], "data_offsets": [0, 16]})"),
       kInvalid, "w", "shape"},
      {"three offsets", OneTensor(R"({"dtype": "F32", "shape": [4], "data_offsets": [0, 8, 16]})"),
       kInvalid, "w", "data_offsets"},
      {"offsets out of bounds",
       OneTensor(R"({"dtype": "F32", "shape": [4], "data_offsets": [16, 32]})"), kInvalid, "w",
       "past the end"},
      {"huge offsets",
       OneTensor(R"({"dtype": "F32", "shape": [4], "data_offsets": [18446744073709551600,
                  18446744073709551615]})"),
       kInvalid, "w", "data_offsets"},
      {"reversed offsets", OneTensor(R"({"dtype": "F32", "shape": [0], "data_offsets": [8, 0]})"),
       kInvalid, "w", "reversed"},
      {"size mismatch", OneTensor(R"({"dtype": "F32", "shape": [3], "data_offsets": [0, 16]})"),
       kInvalid, "w", "needs 12"},
      {"shape overflow",
       OneTensor(R"({"dtype": "F32", "shape": [4294967296, 4294967296], "data_offsets": [0,
                  16]})"),
       kInvalid, "w", "overflows"},
      {"bytes overflow",
       OneTensor(R"({"dtype": "F32", "shape": [4611686018427387904], "data_offsets": [0, 16]})"),
       kInvalid, "w", "overflows"},
      {"unsupported dtype", OneTensor(R"({"dtype": "F64", "shape": [2], "data_offsets": [0, 16]})"),
       absl::StatusCode::kUnimplemented, "w", "F64"},
      {"int dtype", OneTensor(R"({"dtype": "I64", "shape": [2], "data_offsets": [0, 16]})"),
       absl::StatusCode::kUnimplemented, "w", "I64"},
      {"unknown dtype", OneTensor(R"({"dtype": "F33", "shape": [4], "data_offsets": [0, 16]})"),
       kInvalid, "w", "F33"},
      {"overlap",
       RawSafetensors(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                          "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})",
                      std::string(16, '\0')),
       kInvalid, "b", "overlaps tensor a"},
      {"same bytes twice",
       RawSafetensors(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                          "b": {"dtype": "F16", "shape": [4], "data_offsets": [0, 8]}})",
                      std::string(8, '\0')),
       kInvalid, "", "overlaps"},
      {"duplicate name",
       RawSafetensors(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                          "a": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}})",
                      std::string(16, '\0')),
       kInvalid, "a", "twice"},
      {"metadata not an object", RawSafetensors(R"({"__metadata__": "pt"})", ""), kInvalid, "",
       "__metadata__"},
      {"metadata value not a string", RawSafetensors(R"({"__metadata__": {"format": 1}})", ""),
       kInvalid, "", "format"},
  };
}

TEST(SafetensorsTest, BrokenFilesGiveNamedErrors) {
  for (const BrokenCase& c : BrokenCases()) {
    SCOPED_TRACE(c.label);
    auto tensors = ParseSafetensors(c.bytes, kSource);
    ASSERT_FALSE(tensors.ok());
    EXPECT_EQ(tensors.status().code(), c.code) << tensors.status();
    EXPECT_THAT(tensors.status().message(), HasSubstr(kSource));
    EXPECT_THAT(tensors.status().message(), HasSubstr(c.message));
    if (!c.tensor.empty()) {
      EXPECT_THAT(tensors.status().message(), HasSubstr("tensor " + c.tensor + " in "));
    }
  }
}

TEST(SafetensorsTest, BrokenFilesOnDiskGiveNamedErrors) {
  ScratchDir dir;
  for (const BrokenCase& c : BrokenCases()) {
    SCOPED_TRACE(c.label);
    const std::string path = dir.File("model.safetensors");
    WriteFile(path, c.bytes);
    auto file = SafetensorsFile::Open(path);
    ASSERT_FALSE(file.ok());
    EXPECT_EQ(file.status().code(), c.code) << file.status();
    EXPECT_THAT(file.status().message(), HasSubstr(path));
  }
}

TEST(SafetensorsTest, ToleratesGapsAndTrailingBytes) {
  // Not written by the reference writer, but harmless: nothing reads the gap.
  auto tensors = ParseSafetensors(
      RawSafetensors(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [8, 12]}})",
                     std::string(32, '\0')),
      kSource);
  ASSERT_TRUE(tensors.ok()) << tensors.status();
  EXPECT_EQ(tensors->size(), 1u);
}

TEST(SafetensorsTest, UnalignedTensorsAreCopiedAligned) {
  ScratchDir dir;
  // A 1-element F16 tensor puts the F32 tensor after it at data offset 2.
  const std::string path = dir.File("unaligned.safetensors");
  WriteFile(path, SafetensorsBytes({{"a_half", "F16", {1}, std::string(2, '\0')},
                                    {"b_float", "F32", {3}, F32Bytes({1.5f, -2.0f, 3.25f})}}));
  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  const SafetensorsTensor* t = (*file)->Find("b_float");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t->data) % alignof(float), 0u);
  EXPECT_EQ(static_cast<const float*>(t->data)[0], 1.5f);
  EXPECT_EQ(static_cast<const float*>(t->data)[1], -2.0f);
  EXPECT_EQ(static_cast<const float*>(t->data)[2], 3.25f);
}

TEST(SafetensorsTest, OpenReportsMissingFilesAndFolders) {
  ScratchDir dir;
  auto missing = SafetensorsFile::Open(dir.File("nope.safetensors"));
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(missing.status().message(), HasSubstr(dir.File("nope.safetensors")));
  auto folder = SafetensorsFile::Open(dir.path());
  EXPECT_EQ(folder.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(folder.status().message(), HasSubstr(dir.path()));
}

}  // namespace
}  // namespace kvfold
