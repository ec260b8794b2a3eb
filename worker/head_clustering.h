// Grouping attention heads whose scores look alike (CHAI, ATTENTION.md "cluster"): K-means inertia
// for choosing a layer's cluster count at the knee, and average-linkage clustering under cosine
// distance for the membership itself. Points are rows of a row-major [num_points, dim] array.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/types/span.h"

namespace kvfold {

// Sum of squared distances of the points to their nearest of k centroids after Lloyd's
// iterations, seeded deterministically (k-means++ with a fixed seed, best of a few restarts).
// 0 when k >= the number of distinct points.
double KMeansInertia(absl::Span<const float> points, int num_points, int dim, int k);

// The knee of a decreasing curve inertia[0..n) (inertia[i] for i + 1 clusters): the cluster count
// whose normalised drop from one cluster most exceeds the straight line from the first point to
// the last (the Kneedle rule). 1 when the curve is flat.
int KneeClusterCount(absl::Span<const double> inertia);

// Average-linkage agglomerative clustering of the points into `clusters` groups under cosine
// distance. Returns, per point, its cluster's representative: the lowest-index member. Points
// may only merge within the same `shard` of consecutive points (shard_size divides num_points;
// 0 means one shard), so clusters never cross a tensor-parallel shard.
std::vector<int32_t> AverageLinkageRepresentatives(absl::Span<const float> points, int num_points,
                                                   int dim, int clusters, int shard_size = 0);

}  // namespace kvfold
