#include "worker/head_clustering.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>

#include "glog/logging.h"

namespace kvfold {
namespace {

double SquaredDistance(const float* a, const float* b, int dim) {
  double s = 0.0;
  for (int i = 0; i < dim; ++i) {
    const double d = static_cast<double>(a[i]) - b[i];
    s += d * d;
  }
  return s;
}

// One k-means run from k-means++ seeds drawn by `rng`.
double KMeansOnce(absl::Span<const float> points, int n, int dim, int k, std::mt19937_64& rng) {
  std::vector<float> centroids;
  centroids.reserve(static_cast<size_t>(k) * dim);
  std::vector<double> nearest(n, std::numeric_limits<double>::infinity());
  auto add_centroid = [&](int p) {
    centroids.insert(centroids.end(), points.begin() + p * dim, points.begin() + (p + 1) * dim);
    const float* c = centroids.data() + centroids.size() - dim;
    for (int i = 0; i < n; ++i) {
      nearest[i] = std::min(nearest[i], SquaredDistance(points.data() + i * dim, c, dim));
    }
  };
  add_centroid(std::uniform_int_distribution<int>(0, n - 1)(rng));
  for (int c = 1; c < k; ++c) {
    double total = 0.0;
    for (double d : nearest) total += d;
    if (total == 0.0) break;  // every point already sits on a centroid
    double pick = std::uniform_real_distribution<double>(0.0, total)(rng);
    int p = 0;
    for (; p < n - 1 && pick >= nearest[p]; ++p) pick -= nearest[p];
    add_centroid(p);
  }
  const int num_centroids = static_cast<int>(centroids.size()) / dim;
  std::vector<int> assign(n, -1);
  double inertia = 0.0;
  for (int iter = 0; iter < 100; ++iter) {
    bool changed = false;
    inertia = 0.0;
    for (int i = 0; i < n; ++i) {
      int best = 0;
      double best_d = std::numeric_limits<double>::infinity();
      for (int c = 0; c < num_centroids; ++c) {
        const double d = SquaredDistance(points.data() + i * dim, centroids.data() + c * dim, dim);
        if (d < best_d) best_d = d, best = c;
      }
      changed |= assign[i] != best;
      assign[i] = best;
      inertia += best_d;
    }
    if (!changed) break;
    std::vector<double> sum(static_cast<size_t>(num_centroids) * dim, 0.0);
    std::vector<int> count(num_centroids, 0);
    for (int i = 0; i < n; ++i) {
      ++count[assign[i]];
      for (int j = 0; j < dim; ++j) sum[assign[i] * dim + j] += points[i * dim + j];
    }
    for (int c = 0; c < num_centroids; ++c) {
      if (count[c] == 0) continue;  // an empty cluster keeps its centroid
      for (int j = 0; j < dim; ++j) centroids[c * dim + j] = sum[c * dim + j] / count[c];
    }
  }
  return inertia;
}

double CosineDistance(const float* a, const float* b, int dim) {
  double ab = 0.0, aa = 0.0, bb = 0.0;
  for (int i = 0; i < dim; ++i) {
    ab += static_cast<double>(a[i]) * b[i];
    aa += static_cast<double>(a[i]) * a[i];
    bb += static_cast<double>(b[i]) * b[i];
  }
  if (aa == 0.0 || bb == 0.0) return aa == bb ? 0.0 : 1.0;
  return 1.0 - ab / std::sqrt(aa * bb);
}

}  // namespace

double KMeansInertia(absl::Span<const float> points, int num_points, int dim, int k) {
  CHECK_EQ(points.size(), static_cast<size_t>(num_points) * dim);
  CHECK_GT(k, 0);
  if (num_points == 0) return 0.0;
  std::mt19937_64 rng(0x6b766664);  // fixed: calibration is reproducible
  double best = std::numeric_limits<double>::infinity();
  for (int restart = 0; restart < 8; ++restart) {
    best = std::min(best, KMeansOnce(points, num_points, dim, std::min(k, num_points), rng));
  }
  return best;
}

int KneeClusterCount(absl::Span<const double> inertia) {
  const int n = static_cast<int>(inertia.size());
  if (n <= 1) return n;
  const double drop = inertia.front() - inertia.back();
  if (drop <= 0.0) return 1;
  int best = 1;
  double best_gain = 0.0;
  for (int i = 1; i < n; ++i) {
    const double gain = (inertia.front() - inertia[i]) / drop - static_cast<double>(i) / (n - 1);
    if (gain > best_gain) best_gain = gain, best = i + 1;
  }
  return best;
}

std::vector<int32_t> AverageLinkageRepresentatives(absl::Span<const float> points, int num_points,
                                                   int dim, int clusters, int shard_size) {
  CHECK_EQ(points.size(), static_cast<size_t>(num_points) * dim);
  if (shard_size <= 0) shard_size = num_points;
  CHECK(num_points % shard_size == 0) << "shard size must divide the head count";
  const int num_shards = num_points / shard_size;
  CHECK(clusters >= num_shards && clusters <= num_points)
      << clusters << " clusters for " << num_points << " heads in " << num_shards << " shards";
  std::vector<double> dist(static_cast<size_t>(num_points) * num_points);
  for (int i = 0; i < num_points; ++i) {
    for (int j = 0; j < num_points; ++j) {
      dist[i * num_points + j] =
          CosineDistance(points.data() + i * dim, points.data() + j * dim, dim);
    }
  }
  // Each cluster is a list of members; merge the closest pair (mean pairwise distance) in a shard
  // until `clusters` remain. Ties break towards lower indices, so the result is deterministic.
  std::vector<std::vector<int>> groups(num_points);
  for (int i = 0; i < num_points; ++i) groups[i] = {i};
  for (int remaining = num_points; remaining > clusters; --remaining) {
    double best = std::numeric_limits<double>::infinity();
    int best_a = -1, best_b = -1;
    for (int a = 0; a < num_points; ++a) {
      if (groups[a].empty()) continue;
      for (int b = a + 1; b < num_points; ++b) {
        if (groups[b].empty() || a / shard_size != b / shard_size) continue;
        double sum = 0.0;
        for (int i : groups[a]) {
          for (int j : groups[b]) sum += dist[i * num_points + j];
        }
        const double mean = sum / (groups[a].size() * groups[b].size());
        if (mean < best) best = mean, best_a = a, best_b = b;
      }
    }
    CHECK_GE(best_a, 0) << "no pair left to merge";
    groups[best_a].insert(groups[best_a].end(), groups[best_b].begin(), groups[best_b].end());
    groups[best_b].clear();
  }
  std::vector<int32_t> representative(num_points);
  for (const std::vector<int>& g : groups) {
    if (g.empty()) continue;
    const int rep = *std::min_element(g.begin(), g.end());
    for (int i : g) representative[i] = rep;
  }
  return representative;
}

}  // namespace kvfold
