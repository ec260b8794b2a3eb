// TextOutput: streamed text equals the detokenizer's, and a stop string cuts the text before it
// wherever it falls: inside one token, across tokens, or in the first token.
#include "server/output/text_output.h"

#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/testing/paths.h"

namespace kvfold {
namespace {

class TextOutputTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<Tokenizer>> t =
        Tokenizer::FromFile(testing::SourcePath("models/stories260K"));
    ASSERT_TRUE(t.ok()) << t.status();
    tokenizer_ = *std::move(t);
    prompt_ = *tokenizer_->Encode("Once upon a time", true);
    // A continuation to generate, encoded without BOS.
    continuation_ = *tokenizer_->Encode(" there was a little girl named Lily. She liked", false);
    full_text_ = Streamed(continuation_.size());
  }

  // The text of the first n continuation tokens, streamed after the prompt with no stops.
  std::string Streamed(size_t n) {
    IncrementalDetokenizer detokenizer(*tokenizer_, true, prompt_);
    std::string text;
    for (size_t i = 0; i < n; ++i) text += *detokenizer.Push(continuation_[i]);
    return text + *detokenizer.Finish();
  }

  // Pushes the continuation until a stop; returns how many tokens were pushed.
  size_t Run(TextOutput& out) {
    size_t pushed = 0;
    for (int32_t id : continuation_) {
      absl::StatusOr<bool> stopped = out.Push(id);
      EXPECT_TRUE(stopped.ok()) << stopped.status();
      ++pushed;
      if (*stopped) return pushed;
    }
    EXPECT_TRUE(out.Finish().ok());
    return pushed;
  }

  std::unique_ptr<Tokenizer> tokenizer_;
  std::vector<int32_t> prompt_, continuation_;
  std::string full_text_;
};

TEST_F(TextOutputTest, NoStopStringsGivesTheWholeText) {
  TextOutput out(*tokenizer_, prompt_, {});
  EXPECT_EQ(Run(out), continuation_.size());
  EXPECT_FALSE(out.stopped());
  EXPECT_EQ(out.text(), full_text_);
  EXPECT_EQ(out.token_ids(), continuation_);
}

TEST_F(TextOutputTest, StopStringCutsTheTextBeforeIt) {
  for (const std::string stop : {"Lily", "ily. S", " there", "e", "liked"}) {
    TextOutput out(*tokenizer_, prompt_, {"never appears", stop});
    const size_t pushed = Run(out);
    const size_t at = full_text_.find(stop);
    ASSERT_NE(at, std::string::npos) << stop;
    EXPECT_TRUE(out.stopped()) << stop;
    EXPECT_EQ(out.text(), full_text_.substr(0, at)) << stop;
    EXPECT_EQ(out.token_ids().size(), pushed) << stop;
    // The stop is detected at the token that completes it, no later.
    EXPECT_EQ(Streamed(pushed - 1).find(stop), std::string::npos) << stop;
    // Pushes after the stop are ignored.
    EXPECT_TRUE(*out.Push(continuation_[0]));
    EXPECT_EQ(out.token_ids().size(), pushed);
  }
}

TEST_F(TextOutputTest, EarliestOfSeveralStopStringsWins) {
  TextOutput out(*tokenizer_, prompt_, {"girl", "was", ""});
  Run(out);
  EXPECT_EQ(out.text(), full_text_.substr(0, full_text_.find("was")));
}

// What a stream sends as it goes (text()[sent, stable_size()) after each push) is never taken
// back: it is always a prefix of the final text, which a stop string has cut.
TEST_F(TextOutputTest, StreamedPrefixNeverShowsAStopString) {
  for (const std::string stop : {"Lily", "ily. S", "girl named", "e", "lik", "never appears"}) {
    TextOutput out(*tokenizer_, prompt_, {stop});
    std::string sent;
    for (int32_t id : continuation_) {
      const absl::StatusOr<bool> stopped = out.Push(id);
      ASSERT_TRUE(stopped.ok());
      ASSERT_LE(sent.size(), out.stable_size()) << stop;
      ASSERT_EQ(out.text().compare(0, sent.size(), sent), 0) << stop;
      sent = out.text().substr(0, out.stable_size());
      // Only a tail shorter than the stop string is ever held back.
      EXPECT_LT(out.text().size() - out.stable_size(), stop.size()) << stop;
      if (*stopped) break;
    }
    ASSERT_TRUE(out.Finish().ok());
    EXPECT_EQ(out.stable_size(), out.text().size());
    EXPECT_EQ(out.text().substr(0, sent.size()), sent);
    EXPECT_EQ(out.text().find(stop), std::string::npos);
  }
}

}  // namespace
}  // namespace kvfold
