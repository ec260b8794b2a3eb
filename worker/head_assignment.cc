#include "worker/head_assignment.h"

#include <limits>

#include "glog/logging.h"

namespace kvfold {

// The potentials form of the Hungarian algorithm on cost = -similarity (rows: target heads,
// columns: source heads), 1-indexed as in its usual statement; column 0 is a sentinel.
std::vector<int32_t> MaxSimilarityAssignment(absl::Span<const double> similarity, int n) {
  CHECK_EQ(similarity.size(), static_cast<size_t>(n) * n);
  const double inf = std::numeric_limits<double>::infinity();
  auto cost = [&](int i, int j) { return -similarity[(i - 1) * n + (j - 1)]; };
  std::vector<double> u(n + 1, 0.0), v(n + 1, 0.0);
  std::vector<int> row_of(n + 1, 0), way(n + 1, 0);  // row_of[j]: row matched to column j
  for (int i = 1; i <= n; ++i) {
    row_of[0] = i;
    int j0 = 0;
    std::vector<double> min_slack(n + 1, inf);
    std::vector<bool> used(n + 1, false);
    do {
      used[j0] = true;
      const int i0 = row_of[j0];
      double delta = inf;
      int j1 = 0;
      for (int j = 1; j <= n; ++j) {
        if (used[j]) continue;
        const double slack = cost(i0, j) - u[i0] - v[j];
        if (slack < min_slack[j]) {
          min_slack[j] = slack;
          way[j] = j0;
        }
        if (min_slack[j] < delta) {
          delta = min_slack[j];
          j1 = j;
        }
      }
      for (int j = 0; j <= n; ++j) {
        if (used[j]) {
          u[row_of[j]] += delta;
          v[j] -= delta;
        } else {
          min_slack[j] -= delta;
        }
      }
      j0 = j1;
    } while (row_of[j0] != 0);
    do {  // flip the augmenting path
      const int j1 = way[j0];
      row_of[j0] = row_of[j1];
      j0 = j1;
    } while (j0 != 0);
  }
  std::vector<int32_t> perm(n);
  for (int j = 1; j <= n; ++j) perm[row_of[j] - 1] = j - 1;
  return perm;
}

}  // namespace kvfold
