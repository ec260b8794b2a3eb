// IncrementalDetokenizer: for every fixture id list, the streamed pieces are whole UTF-8 and
// concatenate to Decode() of the same ids, with and without a prompt prefix.
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "server/tokenizer/tokenizer.h"
#include "server/tokenizer/utf8.h"
#include "tests/testing/paths.h"
#include "tests/unit/tokenizer_expectations.h"

namespace kvfold {
namespace {

using ::kvfold::testing::AllTokenizersUnderTest;
using ::kvfold::testing::SourcePath;
using ::kvfold::testing::TokenizerUnderTest;
using ::kvfold::testing::TokenizerUnderTestFixture;

// Streams `ids` after `prefix`; returns the pieces, checking each is valid UTF-8.
std::vector<std::string> Stream(const Tokenizer& tokenizer, const std::vector<int32_t>& prefix,
                                const std::vector<int32_t>& ids, bool skip_special_tokens) {
  IncrementalDetokenizer detokenizer(tokenizer, skip_special_tokens, prefix);
  std::vector<std::string> pieces;
  for (const int32_t id : ids) {
    absl::StatusOr<std::string> piece = detokenizer.Push(id);
    EXPECT_TRUE(piece.ok()) << piece.status();
    pieces.push_back(piece.value_or(""));
  }
  absl::StatusOr<std::string> rest = detokenizer.Finish();
  EXPECT_TRUE(rest.ok()) << rest.status();
  pieces.push_back(rest.value_or(""));
  for (const std::string& piece : pieces) {
    EXPECT_TRUE(IsValidUtf8(piece))
        << "a piece splits a UTF-8 sequence: " << ::testing::PrintToString(ids);
  }
  return pieces;
}

std::string Concat(const std::vector<std::string>& pieces) {
  std::string text;
  for (const std::string& piece : pieces) text += piece;
  return text;
}

class IncrementalDetokenizerTest : public TokenizerUnderTestFixture {
 protected:
  void ExpectStreamsLikeDecode(const std::vector<int32_t>& ids) {
    for (const bool skip : {false, true}) {
      const std::string full = tokenizer_->Decode(ids, skip).value();
      EXPECT_EQ(Concat(Stream(*tokenizer_, {}, ids, skip)), full)
          << ::testing::PrintToString(ids) << " skip=" << skip;
    }
  }
};

TEST_P(IncrementalDetokenizerTest, ConcatenationEqualsDecodeForCorpus) {
  for (const testing::EncodeCase& c : expectations_.cases) {
    ExpectStreamsLikeDecode(c.ids);
    ExpectStreamsLikeDecode(c.ids_with_special);
  }
}

// Random ids include byte pieces that never form valid UTF-8: still equal to Decode.
TEST_P(IncrementalDetokenizerTest, ConcatenationEqualsDecodeForRandomIds) {
  for (const testing::DecodeCase& d : expectations_.decodes) ExpectStreamsLikeDecode(d.ids);
}

// After a prompt, the stream is what the generated ids add to the prompt's decode.
TEST_P(IncrementalDetokenizerTest, PrefixGivesContextWithoutBeingEmitted) {
  for (const testing::EncodeCase& c : expectations_.cases) {
    const std::vector<int32_t>& all = c.ids_with_special;
    for (size_t split : {size_t{1}, all.size() / 2, all.size() - 1}) {
      if (split == 0 || split >= all.size()) continue;
      // The documented exception: a prefix that ends inside a byte-piece run.
      if (tokenizer_->DecodesWithNext(all[split - 1])) continue;
      const std::vector<int32_t> prefix(all.begin(), all.begin() + split);
      const std::vector<int32_t> generated(all.begin() + split, all.end());
      for (const bool skip : {false, true}) {
        const std::string prefix_text = tokenizer_->Decode(prefix, skip).value();
        const std::string full = tokenizer_->Decode(all, skip).value();
        ASSERT_EQ(full.substr(0, prefix_text.size()), prefix_text);
        EXPECT_EQ(Concat(Stream(*tokenizer_, prefix, generated, skip)),
                  full.substr(prefix_text.size()))
            << testing::Quoted(c.text) << " split=" << split << " skip=" << skip;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllTokenizers, IncrementalDetokenizerTest,
                         ::testing::ValuesIn(AllTokenizersUnderTest()),
                         [](const ::testing::TestParamInfo<TokenizerUnderTest>& info) {
                           return info.param.name;
                         });

class IncrementalStories260KTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer =
        Tokenizer::FromFile(SourcePath("models/stories260K/tokenizer.json"));
    ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
    tokenizer_ = *std::move(tokenizer);
  }
  int32_t Id(std::string_view token) { return tokenizer_->TokenToId(token).value(); }

  std::unique_ptr<Tokenizer> tokenizer_;
};

TEST_F(IncrementalStories260KTest, BytePiecesWaitForTheirRunToEnd) {
  const std::vector<int32_t> ids = tokenizer_->Encode("a中b", false).value();
  IncrementalDetokenizer detokenizer(*tokenizer_, false);
  std::string text;
  for (const int32_t id : ids) {
    const std::string piece = detokenizer.Push(id).value();
    if (tokenizer_->DecodesWithNext(id)) {
      EXPECT_EQ(piece, "");
    }
    text += piece;
  }
  EXPECT_EQ(text, tokenizer_->Decode(ids, false).value());
  EXPECT_NE(text.find("中"), std::string::npos);
  EXPECT_EQ(detokenizer.Finish().value(), "");
}

TEST_F(IncrementalStories260KTest, TruncatedCharacterFlushesAsReplacementsOnFinish) {
  IncrementalDetokenizer detokenizer(*tokenizer_, false);
  EXPECT_EQ(detokenizer
                .Push(Id("\xE2\x96\x81"
                         "a"))
                .value(),
            "a");
  EXPECT_EQ(detokenizer.Push(Id("<0xE4>")).value(), "");
  EXPECT_EQ(detokenizer.Push(Id("<0xB8>")).value(), "");
  EXPECT_EQ(detokenizer.Finish().value(), "\uFFFD\uFFFD");
}

TEST_F(IncrementalStories260KTest, PromptSpaceIsKept) {
  const std::vector<int32_t> prompt = tokenizer_->Encode("Once upon", true).value();
  const std::vector<int32_t> more = tokenizer_->Encode("a time", false).value();
  IncrementalDetokenizer detokenizer(*tokenizer_, true, prompt);
  std::string text;
  for (const int32_t id : more) text += detokenizer.Push(id).value();
  text += detokenizer.Finish().value();
  EXPECT_EQ(text, " a time");
}

TEST_F(IncrementalStories260KTest, UnknownIdIsInvalidArgument) {
  IncrementalDetokenizer detokenizer(*tokenizer_, false);
  EXPECT_EQ(detokenizer.Push(-3).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(detokenizer.Push(100000).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(detokenizer.Finish().value(), "");
}

}  // namespace
}  // namespace kvfold
