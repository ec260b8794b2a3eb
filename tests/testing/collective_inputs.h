// Inputs for collective tests (gloo, NCCL): values whose float sum depends on the order, so a
// test can tell a rank-order all-reduce from any other order.
#pragma once

#include <cstddef>
#include <random>
#include <vector>

namespace kvfold::testing {

// Huge terms that cancel (±1e8) beside small ones: (1e8 + 0.3) - 1e8 != (1e8 - 1e8) + 0.3 in
// float. Seeded by `seed + rank`.
inline std::vector<float> RankInput(int rank, size_t count, unsigned seed = 1234) {
  std::mt19937 rng(seed + rank);
  std::uniform_real_distribution<float> small(-1.0f, 1.0f);
  std::vector<float> v(count);
  for (size_t i = 0; i < count; ++i) {
    const size_t k = (i + rank) % 4;
    v[i] = k == 0 ? 1e8f : k == 2 ? -1e8f : small(rng);
  }
  return v;
}

// ((x0 + x1) + x2) + ...: what Communicator::AllReduceSum promises.
inline std::vector<float> RankOrderSum(int size, size_t count, unsigned seed = 1234) {
  std::vector<float> sum = RankInput(0, count, seed);
  for (int r = 1; r < size; ++r) {
    const std::vector<float> x = RankInput(r, count, seed);
    for (size_t i = 0; i < count; ++i) sum[i] += x[i];
  }
  return sum;
}

}  // namespace kvfold::testing
