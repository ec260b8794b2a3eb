// The bundled stories260K model on one CPU thread with its tokenizer: the set-up of tests that
// serve it in-process (the serving engine, the gRPC front end).
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "gtest/gtest.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/ops.h"
#include "server/tokenizer/tokenizer.h"
#include "tests/testing/model_fixtures.h"
#include "tests/testing/paths.h"
#include "worker/llama_model.h"

namespace kvfold::testing {

class StoriesFixture : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string path = SourcePath("models/stories260K");
    ops_ = NewCpuOps(1);
    absl::StatusOr<std::unique_ptr<LlamaModel>> model = LoadModel(path, *ops_);
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = *std::move(model);
    absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = Tokenizer::FromFile(path);
    ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
    tokenizer_ = *std::move(tokenizer);
  }

  std::unique_ptr<Ops> ops_;
  std::unique_ptr<LlamaModel> model_;
  std::unique_ptr<Tokenizer> tokenizer_;
};

}  // namespace kvfold::testing
