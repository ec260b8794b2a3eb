// `kvfold generate --prompts-file FILE`: every line of FILE becomes a request to one Engine, so
// they share continuous batches over the paged KV pool; results print in input order.
#pragma once

#include <cstdint>
#include <string>

#include "kernels/ops.h"
#include "scheduler/request.h"
#include "server/cli/model_setup.h"
#include "server/tokenizer/tokenizer.h"
#include "worker/llama_model.h"

namespace kvfold::cli {

// What a line gets for the fields it leaves out (the command's flags).
struct LineDefaults {
  int32_t max_tokens = 256;
  SamplingParams sampling;  // temperature, seed, top_k, top_p, min_p, repetition_penalty
};

// Runs the file; returns the process exit code: 0 when the file ran (lines may still have
// failed, each with its own error object), 1 when it could not run (unreadable file, KV pool too
// small, bad engine flags), with the reason on stderr.
int RunPromptsFile(LoadedModel& loaded, const std::string& path, const LineDefaults& defaults);

}  // namespace kvfold::cli
