// Reads the exactness fixtures that scripts/dev/make_tokenizer_expectations.py writes from Hugging
// Face `tokenizers`, and names the tokenizers they were written for.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <ostream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "server/tokenizer/tokenizer.h"
#include "tests/testing/paths.h"

namespace kvfold::testing {

struct EncodeCase {
  std::string text;
  std::vector<int32_t> ids;               // encode(text, add_special_tokens=False)
  std::vector<int32_t> ids_with_special;  // encode(text, add_special_tokens=True)
  std::string decode;                     // decode(ids, skip_special_tokens=False)
  std::string decode_skip_special;
  std::string decode_with_special;  // decode(ids_with_special, ...)
  std::string decode_with_special_skip_special;
};

struct DecodeCase {
  std::vector<int32_t> ids;
  std::string decode;
  std::string decode_skip_special;
};

struct Expectations {
  std::string tokenizers_version;
  int32_t vocab_size = 0;
  std::vector<EncodeCase> cases;
  std::vector<DecodeCase> decodes;
};

// Where a tokenizer under test lives: in the repository, in ../shared, or in the model cache
// (~/.cache/kvfold, which scripts/setup.sh fills).
enum class Location { kRepository, kShared, kCache };

// One tokenizer under test: its fixture name and where its tokenizer.json (or .gguf) lives.
struct TokenizerUnderTest {
  std::string name;  // expected_<name>.json
  std::string path;  // relative to its location
  Location location = Location::kRepository;
};

// The model cache that scripts/setup.sh fills: $HOME/.cache/kvfold.
inline std::string ModelCachePath(const std::string& relative) {
  const char* home = std::getenv("HOME");
  return std::string(home != nullptr ? home : "") + "/.cache/kvfold/" + relative;
}

// Keeps gtest from printing the struct's bytes in test names.
inline void PrintTo(const TokenizerUnderTest& under_test, std::ostream* os) {
  *os << under_test.name;
}

inline std::vector<TokenizerUnderTest> AllTokenizersUnderTest() {
  const std::string fixtures = "tests/fixtures/tokenizer/";
  const Location repo = Location::kRepository, shared = Location::kShared;
  return {
      {"stories260K", "models/stories260K/tokenizer.json", repo},
      {"stories260K_metaspace_first", fixtures + "stories260K_metaspace_first.json", repo},
      {"stories260K_metaspace_always_split", fixtures + "stories260K_metaspace_always_split.json",
       repo},
      {"stories260K_metaspace_legacy", fixtures + "stories260K_metaspace_legacy.json", repo},
      {"stories260K_added_flags", fixtures + "stories260K_added_flags.json", repo},
      {"stories260K_split_pcre2", fixtures + "stories260K_split_pcre2.json", repo},
      {"stories260K_split_invert", fixtures + "stories260K_split_invert.json", repo},
      {"gguf_stories260K_spm", "tests/fixtures/gguf/stories260K_spm.gguf", repo},
      {"gguf_stories260K_spm_no_prefix", "tests/fixtures/gguf/stories260K_spm_no_prefix.gguf",
       repo},
      {"llama2", "tokenizers/llama2/tokenizer.json", shared},
      {"mistral", "tokenizers/mistral/tokenizer.json", shared},
      {"llama3", "tokenizers/llama3/tokenizer.json", shared},
      {"qwen3", "tokenizers/qwen3/tokenizer.json", shared},
      {"smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", Location::kCache},
  };
}

inline std::string ReadTextFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream contents;
  contents << in.rdbuf();
  return contents.str();
}

// Parses expected_<name>.json; fixtures are trusted test data, so a malformed one fails the test
// through the exception gtest reports.
inline Expectations LoadExpectations(const std::string& name) {
  const std::string path = SourcePath("tests/fixtures/tokenizer/expected_" + name + ".json");
  const nlohmann::json root = nlohmann::json::parse(ReadTextFile(path));
  Expectations result;
  result.tokenizers_version = root.at("tokenizers_version").get<std::string>();
  result.vocab_size = root.at("vocab_size").get<int32_t>();
  for (const nlohmann::json& c : root.at("cases")) {
    result.cases.push_back(EncodeCase{
        c.at("text").get<std::string>(),
        c.at("ids").get<std::vector<int32_t>>(),
        c.at("ids_with_special").get<std::vector<int32_t>>(),
        c.at("decode").get<std::string>(),
        c.at("decode_skip_special").get<std::string>(),
        c.at("decode_with_special").get<std::string>(),
        c.at("decode_with_special_skip_special").get<std::string>(),
    });
  }
  for (const nlohmann::json& d : root.at("decodes")) {
    result.decodes.push_back(DecodeCase{d.at("ids").get<std::vector<int32_t>>(),
                                        d.at("decode").get<std::string>(),
                                        d.at("decode_skip_special").get<std::string>()});
  }
  return result;
}

// A fixture over AllTokenizersUnderTest(): SetUp loads the parameter's tokenizer and its
// expectations, skipping the test when a shared or cached tokenizer is absent.
class TokenizerUnderTestFixture : public ::testing::TestWithParam<TokenizerUnderTest> {
 protected:
  void SetUp() override {
    const TokenizerUnderTest& under_test = GetParam();
    std::string path = SourcePath(under_test.path);
    if (under_test.location == Location::kShared) {
      KVFOLD_REQUIRE_SHARED(shared_path, under_test.path);
      path = shared_path;
    } else if (under_test.location == Location::kCache) {
      path = ModelCachePath(under_test.path);
      if (!std::filesystem::exists(path)) {
        GTEST_SKIP() << path << " is absent (scripts/setup.sh fetches it); skipped";
      }
    }
    absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = Tokenizer::FromFile(path);
    ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
    tokenizer_ = *std::move(tokenizer);
    expectations_ = LoadExpectations(under_test.name);
  }

  std::unique_ptr<Tokenizer> tokenizer_;
  Expectations expectations_;
};

// A printable form of a test string for failure messages (JSON-escaped).
inline std::string Quoted(const std::string& text) {
  return nlohmann::json(text).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace kvfold::testing
