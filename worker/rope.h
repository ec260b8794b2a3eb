// RoPE frequencies and the cos/sin table, with the scalings of Hugging Face's rope_utils.
#pragma once

#include <vector>

#include "worker/model_config.h"

namespace kvfold {

// head_dim / 2 inverse frequencies, scaled as config.rope_scaling says (its type, then its
// per-frequency factors, as llama.cpp applies a GGUF's rope_freqs.weight).
std::vector<float> RopeInverseFrequencies(const ModelConfig& config);

// [num_positions, head_dim] row-major: cos in columns [0, d/2), sin in [d/2, d) (see RopeTable).
std::vector<float> RopeCosSinTable(const ModelConfig& config, int num_positions);

}  // namespace kvfold
