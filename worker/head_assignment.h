// The best one-to-one matching of heads between two layers (ATTENTION.md "share", `align`).
#pragma once

#include <cstdint>
#include <vector>

#include "absl/types/span.h"

namespace kvfold {

// Given similarity[i * n + j] between target head i and source head j, returns the permutation
// perm (perm[i] = the source head feeding target head i) maximising Σ similarity[i, perm[i]]
// (the Hungarian algorithm, O(n³)).
std::vector<int32_t> MaxSimilarityAssignment(absl::Span<const double> similarity, int n);

}  // namespace kvfold
