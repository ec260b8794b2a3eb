// `kvfold generate --attention-plan`: a drop plan runs and reports its KV saving; a plan for
// another model, or a broken one, fails with a clear message and a non-zero exit.
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/cli_runner.h"
#include "tests/testing/model_fixtures.h"
#include "tests/testing/paths.h"
#include "tests/testing/safetensors_writer.h"
#include "worker/attention_plan.h"
#include "worker/model_loader.h"

namespace kvfold {
namespace {

using testing::CliResult;
using ::testing::HasSubstr;
using testing::RunKvfold;

std::string Stories() { return testing::StoriesPath(); }

std::string Fingerprint() { return testing::StoriesFingerprint(); }

std::string DropPlan(const std::string& fingerprint) {
  return "{\"version\": 1, \"model_fingerprint\": \"" + fingerprint +
         "\", \"layers\": [{\"mode\": \"full\"}, {\"mode\": \"full\"}, {\"mode\": \"drop\"}, "
         "{\"mode\": \"full\"}, {\"mode\": \"drop\"}]}";
}

TEST(AttentionPlanCliTest, DropPlanGeneratesText) {
  testing::ScratchDir dir;
  testing::WriteFile(dir.File("plan.json"), DropPlan(Fingerprint()));
  CliResult r = RunKvfold({"generate", "--model", Stories(), "--prompt", "Once upon a time",
                           "--max-tokens", "20", "--attention-plan", dir.File("plan.json")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, ::testing::StartsWith("Once upon a time"));
  EXPECT_GT(r.out.size(), std::string("Once upon a time").size() + 10);
  // 5 layers x (4 + 4) KV heads x 8 dims x 2 bytes unfolded; 2 layers dropped.
  EXPECT_THAT(r.err, HasSubstr("(2 of 5 layers folded): 384 bytes/token, unfolded 640 (-40.0%)"));

  testing::WriteFile(dir.File("prompts.jsonl"), "{\"prompt\": \"Once upon a time\"}\n");
  CliResult batch =
      RunKvfold({"generate", "--model", Stories(), "--prompts-file", dir.File("prompts.jsonl"),
                 "--max-tokens", "10", "--kv-cache-memory", "1MiB", "--max-model-len", "256",
                 "--attention-plan", dir.File("plan.json")});
  ASSERT_EQ(batch.exit_code, 0) << batch.err;
  EXPECT_THAT(batch.out, HasSubstr("\"text\""));
  // 1 MiB / (16 x 384 bytes) = 170 blocks = 10 sequences of 16 blocks; unfolded 102 -> 6.
  EXPECT_THAT(batch.err, HasSubstr("pool 170 blocks x 16 tokens = 10 sequences of 256 tokens "
                                   "(unfolded 6)"));
}

TEST(AttentionPlanCliTest, BadPlansFailClearly) {
  testing::ScratchDir dir;
  testing::WriteFile(dir.File("other.json"), DropPlan("0123abcd"));
  CliResult r = RunKvfold({"generate", "--model", Stories(), "--prompt", "Once", "--attention-plan",
                           dir.File("other.json")});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(r.out.empty()) << r.out;
  EXPECT_THAT(r.err, HasSubstr("other.json: the plan was calibrated for another model "
                               "(fingerprint 0123abcd"));

  testing::WriteFile(dir.File("broken.json"), "{\"version\": 1, \"layers\": [");
  r = RunKvfold({"generate", "--model", Stories(), "--prompt", "Once", "--attention-plan",
                 dir.File("broken.json")});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("broken.json: not valid JSON"));

  r = RunKvfold({"generate", "--model", Stories(), "--prompt", "Once", "--attention-plan",
                 dir.File("absent.json")});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("cannot read attention plan"));
}

}  // namespace
}  // namespace kvfold
