// The hand-written matchers of the GPT-2, Llama 3 and Qwen 2 split regexes against the same
// regexes compiled by the PCRE2 fallback (which reads \p{L}, \p{N}, \s from the same tables), on
// the corpus and on random strings over the characters where the alternatives compete.
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "server/tokenizer/pcre2_regex.h"
#include "server/tokenizer/split_patterns.h"
#include "tests/unit/tokenizer_expectations.h"

namespace kvfold::tokenizer_impl {
namespace {

std::vector<std::pair<size_t, size_t>> HandMatches(KnownPattern pattern, std::string_view text) {
  std::vector<std::pair<size_t, size_t>> matches;
  for (size_t pos = 0; pos < text.size();) {
    const size_t end = MatchEnd(pattern, text, pos);
    matches.emplace_back(pos, end);
    pos = end;
  }
  return matches;
}

std::vector<std::string> Texts() {
  std::vector<std::string> texts;
  for (const auto& c : testing::LoadExpectations("stories260K").cases) texts.push_back(c.text);
  const std::vector<std::string> pieces = {
      "a",          "Z",      "\u00e9", "\u4e2d", "1",       "\u0663", "\u00b2", " ",
      "  ",         "\t",     "\n",     "\r",     "\r\n",    "\u00a0", "\u3000", "'",
      "'s",         "'S",     "'ll",    "'LL",    "'\u017f", "!",      ".",      "(",
      "\U0001F600", "\u0301", "x",      "'re",    "'Ve",     "\u1c89"};
  std::mt19937 rng(42);
  for (int i = 0; i < 3000; ++i) {
    std::string text;
    const int n = 1 + static_cast<int>(rng() % 12);
    for (int k = 0; k < n; ++k) text += pieces[rng() % pieces.size()];
    texts.push_back(text);
  }
  return texts;
}

TEST(SplitPatternsTest, HandMatchersAgreeWithPcre2) {
  const std::vector<std::string> texts = Texts();
  for (const auto& [pattern, regex] :
       {std::pair{KnownPattern::kGpt2, kGpt2Regex}, std::pair{KnownPattern::kLlama3, kLlama3Regex},
        std::pair{KnownPattern::kQwen2, kQwen2Regex}}) {
    auto compiled = Pcre2Regex::Compile(regex, "test");
    ASSERT_TRUE(compiled.ok()) << compiled.status();
    for (const std::string& text : texts) {
      EXPECT_EQ(HandMatches(pattern, text), (*compiled)->FindAll(text))
          << testing::Quoted(text) << " pattern " << static_cast<int>(pattern);
    }
  }
}

TEST(SplitPatternsTest, RecognizesOnlyTheExactRegexes) {
  EXPECT_EQ(RecognizePattern(kLlama3Regex), KnownPattern::kLlama3);
  EXPECT_EQ(RecognizePattern(kQwen2Regex), KnownPattern::kQwen2);
  EXPECT_EQ(RecognizePattern(kGpt2Regex), KnownPattern::kGpt2);
  EXPECT_EQ(RecognizePattern(std::string(kGpt2Regex) + "|x"), std::nullopt);
}

}  // namespace
}  // namespace kvfold::tokenizer_impl
