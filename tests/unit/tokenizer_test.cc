// The tokenizer against Hugging Face `tokenizers`: every id and every decode of the corpus in
// tests/fixtures/tokenizer (see scripts/dev/make_tokenizer_expectations.py), plus targeted cases.
#include "server/tokenizer/tokenizer.h"

#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "server/tokenizer/utf8.h"
#include "tests/testing/paths.h"
#include "tests/unit/tokenizer_expectations.h"

namespace kvfold {
namespace {

using ::kvfold::testing::AllTokenizersUnderTest;
using ::kvfold::testing::Quoted;
using ::kvfold::testing::SourcePath;
using ::kvfold::testing::TokenizerUnderTest;
using ::kvfold::testing::TokenizerUnderTestFixture;

class TokenizerExactnessTest : public TokenizerUnderTestFixture {
 protected:
  void SetUp() override {
    TokenizerUnderTestFixture::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    RecordProperty("tokenizers_version", expectations_.tokenizers_version);
  }

  std::string Decode(const std::vector<int32_t>& ids, bool skip_special_tokens) {
    absl::StatusOr<std::string> text = tokenizer_->Decode(ids, skip_special_tokens);
    EXPECT_TRUE(text.ok()) << text.status();
    return text.value_or("");
  }
};

TEST_P(TokenizerExactnessTest, VocabSizeMatches) {
  EXPECT_EQ(tokenizer_->vocab_size(), expectations_.vocab_size);
}

TEST_P(TokenizerExactnessTest, EncodeMatchesHuggingFace) {
  ASSERT_GE(expectations_.cases.size(), 150u);
  for (const testing::EncodeCase& c : expectations_.cases) {
    absl::StatusOr<std::vector<int32_t>> ids = tokenizer_->Encode(c.text, false);
    ASSERT_TRUE(ids.ok()) << ids.status();
    EXPECT_EQ(*ids, c.ids) << Quoted(c.text);
    absl::StatusOr<std::vector<int32_t>> ids_with_special = tokenizer_->Encode(c.text, true);
    ASSERT_TRUE(ids_with_special.ok()) << ids_with_special.status();
    EXPECT_EQ(*ids_with_special, c.ids_with_special) << Quoted(c.text);
  }
}

TEST_P(TokenizerExactnessTest, DecodeMatchesHuggingFace) {
  for (const testing::EncodeCase& c : expectations_.cases) {
    EXPECT_EQ(Decode(c.ids, false), c.decode) << Quoted(c.text);
    EXPECT_EQ(Decode(c.ids, true), c.decode_skip_special) << Quoted(c.text);
    EXPECT_EQ(Decode(c.ids_with_special, false), c.decode_with_special) << Quoted(c.text);
    EXPECT_EQ(Decode(c.ids_with_special, true), c.decode_with_special_skip_special)
        << Quoted(c.text);
  }
}

// Random ids: byte pieces forming invalid UTF-8, specials between byte pieces, and so on.
TEST_P(TokenizerExactnessTest, RandomIdDecodesMatchHuggingFace) {
  ASSERT_FALSE(expectations_.decodes.empty());
  for (const testing::DecodeCase& d : expectations_.decodes) {
    EXPECT_EQ(Decode(d.ids, false), d.decode) << ::testing::PrintToString(d.ids);
    EXPECT_EQ(Decode(d.ids, true), d.decode_skip_special) << ::testing::PrintToString(d.ids);
  }
}

INSTANTIATE_TEST_SUITE_P(AllTokenizers, TokenizerExactnessTest,
                         ::testing::ValuesIn(AllTokenizersUnderTest()),
                         [](const ::testing::TestParamInfo<TokenizerUnderTest>& info) {
                           return info.param.name;
                         });

class Stories260KTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer =
        Tokenizer::FromFile(SourcePath("models/stories260K"));
    ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
    tokenizer_ = *std::move(tokenizer);
  }

  int32_t Id(std::string_view token) {
    std::optional<int32_t> id = tokenizer_->TokenToId(token);
    EXPECT_TRUE(id.has_value()) << token;
    return id.value_or(-1);
  }

  std::unique_ptr<Tokenizer> tokenizer_;
};

TEST_F(Stories260KTest, SpecialTokensAndLookups) {
  EXPECT_EQ(tokenizer_->vocab_size(), 512);
  EXPECT_EQ(tokenizer_->bos_id(), 1);
  EXPECT_EQ(tokenizer_->eos_id(), 2);
  EXPECT_EQ(Id("<unk>"), 0);
  EXPECT_EQ(Id("</s>"), 2);
  EXPECT_EQ(tokenizer_->IdToToken(1), "<s>");
  EXPECT_EQ(tokenizer_->IdToToken(-1), std::nullopt);
  EXPECT_EQ(tokenizer_->IdToToken(512), std::nullopt);
  EXPECT_EQ(tokenizer_->TokenToId("no such token"), std::nullopt);
  for (int32_t id : {0, 1, 2}) EXPECT_TRUE(tokenizer_->IsSpecial(id)) << id;
  EXPECT_FALSE(tokenizer_->IsSpecial(3));
  EXPECT_FALSE(tokenizer_->IsSpecial(-1));
}

TEST_F(Stories260KTest, AddSpecialTokensPrependsOnlyBos) {
  EXPECT_EQ(tokenizer_->Encode("", true).value(), std::vector<int32_t>{1});
  EXPECT_TRUE(tokenizer_->Encode("", false).value().empty());
  std::vector<int32_t> plain = tokenizer_->Encode("Once upon a time", false).value();
  plain.insert(plain.begin(), 1);
  EXPECT_EQ(tokenizer_->Encode("Once upon a time", true).value(), plain);
}

TEST_F(Stories260KTest, CharactersOutsideTheVocabFallBackToBytes) {
  // "中" is E4 B8 AD in UTF-8; stories260K's 512 pieces have no CJK.
  const std::vector<int32_t> expected = {Id("\xE2\x96\x81"), Id("<0xE4>"), Id("<0xB8>"),
                                         Id("<0xAD>")};
  EXPECT_EQ(tokenizer_->Encode("中", false).value(), expected);
  EXPECT_EQ(tokenizer_->Decode(expected, false).value(), "中");
  EXPECT_TRUE(tokenizer_->DecodesWithNext(Id("<0xE4>")));
  EXPECT_FALSE(tokenizer_->DecodesWithNext(Id("\xE2\x96\x81")));
}

TEST_F(Stories260KTest, InvalidByteRunsDecodeToOneReplacementPerByte) {
  const std::vector<int32_t> truncated = {Id("<0xE4>"), Id("<0xB8>")};
  EXPECT_EQ(tokenizer_->Decode(truncated, false).value(), "\uFFFD\uFFFD");
  // A valid character followed by a stray byte: the whole run becomes U+FFFD, as in HF.
  const std::vector<int32_t> spoiled = {Id("<0xC3>"), Id("<0xA9>"), Id("<0xFF>")};
  EXPECT_EQ(tokenizer_->Decode(spoiled, false).value(), "\uFFFD\uFFFD\uFFFD");
}

TEST_F(Stories260KTest, InvalidUtf8IsInvalidArgument) {
  for (const std::string text :
       {"\xFF", "abc\xC3", "\xC0\x80", "\xED\xA0\x80", "\xF4\x90\x80\x80", "ok \xE4\xB8 cut"}) {
    absl::StatusOr<std::vector<int32_t>> ids = tokenizer_->Encode(text, true);
    EXPECT_EQ(ids.status().code(), absl::StatusCode::kInvalidArgument) << Quoted(text);
    EXPECT_NE(ids.status().message().find("UTF-8"), std::string_view::npos);
  }
}

TEST_F(Stories260KTest, DecodeRejectsIdsOutsideTheVocab) {
  for (const std::vector<int32_t>& ids :
       {std::vector<int32_t>{-1}, std::vector<int32_t>{512}, std::vector<int32_t>{5, 1 << 30}}) {
    absl::StatusOr<std::string> text = tokenizer_->Decode(ids, false);
    EXPECT_EQ(text.status().code(), absl::StatusCode::kInvalidArgument);
  }
}

// A prompt thousands of tokens long: the heap-based merge keeps this fast, and the ids decode
// back to the text.
TEST_F(Stories260KTest, LongInputRoundTrips) {
  std::string text;
  while (text.size() < 200000) text += "Lily saw a big red ball in the park and ran to get it. ";
  absl::StatusOr<std::vector<int32_t>> ids = tokenizer_->Encode(text, false);
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_GT(ids->size(), 20000u);
  EXPECT_EQ(tokenizer_->Decode(*ids, false).value(), text);
}

TEST(Utf8Test, Validity) {
  EXPECT_TRUE(IsValidUtf8(""));
  EXPECT_TRUE(IsValidUtf8("plain ascii"));
  EXPECT_TRUE(IsValidUtf8("\xC3\xA9\xE4\xB8\xAD\xF0\x9F\x98\x80\xF4\x8F\xBF\xBF"));
  EXPECT_FALSE(IsValidUtf8("\x80"));              // lone continuation byte
  EXPECT_FALSE(IsValidUtf8("\xC3"));              // truncated
  EXPECT_FALSE(IsValidUtf8("\xC1\xBF"));          // overlong
  EXPECT_FALSE(IsValidUtf8("\xE0\x9F\xBF"));      // overlong
  EXPECT_FALSE(IsValidUtf8("\xED\xB0\x80"));      // surrogate
  EXPECT_FALSE(IsValidUtf8("\xF4\x90\x80\x80"));  // past U+10FFFF
  EXPECT_FALSE(IsValidUtf8("\xF8\x88\x80\x80\x80"));
  EXPECT_EQ(FirstInvalidUtf8Offset("ab\xFF"), 2u);
}

}  // namespace
}  // namespace kvfold
