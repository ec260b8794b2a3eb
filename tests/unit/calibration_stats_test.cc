// The statistics behind `kvfold calibrate`: head matching, head clustering and the attention
// measurements, each against a brute-force or closed-form answer.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "worker/attention_stats.h"
#include "worker/head_assignment.h"
#include "worker/head_clustering.h"

namespace kvfold {
namespace {

using ::testing::ElementsAre;

TEST(MaxSimilarityAssignmentTest, MatchesBruteForceOnRandomMatrices) {
  std::mt19937 rng(7);
  std::uniform_real_distribution<double> u(-1.0, 1.0);
  for (int n : {1, 2, 3, 5, 7}) {
    for (int trial = 0; trial < 20; ++trial) {
      std::vector<double> sim(n * n);
      for (double& s : sim) s = u(rng);
      std::vector<int32_t> perm(n);
      std::iota(perm.begin(), perm.end(), 0);
      double best = -1e300;
      do {
        double total = 0.0;
        for (int i = 0; i < n; ++i) total += sim[i * n + perm[i]];
        best = std::max(best, total);
      } while (std::next_permutation(perm.begin(), perm.end()));
      const std::vector<int32_t> got = MaxSimilarityAssignment(sim, n);
      std::vector<int32_t> sorted = got;
      std::sort(sorted.begin(), sorted.end());
      for (int i = 0; i < n; ++i) ASSERT_EQ(sorted[i], i) << "not a permutation";
      double total = 0.0;
      for (int i = 0; i < n; ++i) total += sim[i * n + got[i]];
      EXPECT_NEAR(total, best, 1e-9) << "n=" << n << " trial " << trial;
    }
  }
}

TEST(MaxSimilarityAssignmentTest, FindsAPlantedPermutation) {
  const int n = 6;
  const std::vector<int32_t> planted = {3, 0, 5, 1, 4, 2};
  std::vector<double> sim(n * n, 0.1);
  for (int i = 0; i < n; ++i) sim[i * n + planted[i]] = 0.9;
  EXPECT_EQ(MaxSimilarityAssignment(sim, n), planted);
}

// Points near three well-separated directions.
std::vector<float> ThreeBlobs(int per_blob, std::mt19937& rng) {
  std::normal_distribution<float> noise(0.0f, 0.01f);
  const float centers[3][3] = {{1, 0, 0}, {0, 1, 0}, {0, 0, 1}};
  std::vector<float> points;
  for (int b = 0; b < 3; ++b) {
    for (int i = 0; i < per_blob; ++i) {
      for (int j = 0; j < 3; ++j) points.push_back(centers[b][j] + noise(rng));
    }
  }
  return points;
}

TEST(KMeansInertiaTest, OneClusterIsTotalVarianceAndEnoughClustersIsZero) {
  const std::vector<float> points = {0, 0, 2, 0, 0, 4, 2, 4};  // a 2 x 4 rectangle
  EXPECT_NEAR(KMeansInertia(points, 4, 2, 1), 4 * (1 + 4), 1e-9);
  EXPECT_NEAR(KMeansInertia(points, 4, 2, 2), 4 * 1, 1e-9);  // split along the long side
  EXPECT_NEAR(KMeansInertia(points, 4, 2, 4), 0.0, 1e-12);
}

TEST(KMeansInertiaTest, KneeOfThreeBlobsIsThree) {
  std::mt19937 rng(3);
  const std::vector<float> points = ThreeBlobs(5, rng);
  std::vector<double> inertia;
  for (int k = 1; k <= 15; ++k) inertia.push_back(KMeansInertia(points, 15, 3, k));
  for (int k = 1; k < 15; ++k) EXPECT_LE(inertia[k], inertia[k - 1] + 1e-9);
  EXPECT_EQ(KneeClusterCount(inertia), 3);
}

TEST(KneeClusterCountTest, FlatAndTinyCurves) {
  EXPECT_EQ(KneeClusterCount(std::vector<double>{5.0, 5.0, 5.0}), 1);
  EXPECT_EQ(KneeClusterCount(std::vector<double>{5.0}), 1);
  EXPECT_EQ(KneeClusterCount(std::vector<double>{10.0, 1.0, 0.5, 0.0}), 2);
}

TEST(AverageLinkageTest, RecoversBlobsWithLowestIndexRepresentatives) {
  // Interleave the blobs so representatives are not simply 0, 5, 10.
  const std::vector<float> points = {1, 0, 0, 0, 1, 0,     1, 0.1f,  0,
                                     0, 0, 1, 0, 1, 0.05f, 0, 0.02f, 1};
  EXPECT_THAT(AverageLinkageRepresentatives(points, 6, 3, 3), ElementsAre(0, 1, 0, 3, 1, 3));
  EXPECT_THAT(AverageLinkageRepresentatives(points, 6, 3, 6), ElementsAre(0, 1, 2, 3, 4, 5));
  EXPECT_THAT(AverageLinkageRepresentatives(points, 6, 3, 1), ElementsAre(0, 0, 0, 0, 0, 0));
}

TEST(AverageLinkageTest, ClustersNeverCrossAShard) {
  // Heads 0 and 2 are identical (and 1 and 3) but sit in different shards of 2.
  const std::vector<float> points = {1, 0, 0, 1, 1, 0, 1, 0, 0, 1, 1, 0};
  const std::vector<int32_t> reps = AverageLinkageRepresentatives(points, 4, 3, 2, 2);
  EXPECT_THAT(reps, ElementsAre(0, 0, 2, 2));
}

TEST(CausalAttentionProbsTest, RowsAreCausalDistributions) {
  std::mt19937 rng(1);
  std::normal_distribution<float> n01;
  const int tokens = 6, heads = 4, kv_heads = 2, dim = 8;
  std::vector<float> q(tokens * heads * dim), k(tokens * kv_heads * dim);
  for (float& v : q) v = n01(rng);
  for (float& v : k) v = n01(rng);
  const std::vector<float> p = CausalAttentionProbs(q, k, tokens, heads, kv_heads, dim, 0.35f);
  for (int h = 0; h < heads; ++h) {
    for (int t = 0; t < tokens; ++t) {
      const float* row = p.data() + (h * tokens + t) * tokens;
      double sum = 0.0;
      for (int s = 0; s < tokens; ++s) {
        if (s > t) {
          EXPECT_EQ(row[s], 0.0f);
        }
        sum += row[s];
      }
      EXPECT_NEAR(sum, 1.0, 1e-6);
    }
  }
  // Head 1 shares KV head 0 with head 0: with equal queries their probabilities are equal.
  for (int t = 0; t < tokens; ++t) {
    std::copy_n(q.begin() + (t * heads + 0) * dim, dim, q.begin() + (t * heads + 1) * dim);
  }
  const std::vector<float> p2 = CausalAttentionProbs(q, k, tokens, heads, kv_heads, dim, 0.35f);
  for (int i = 0; i < tokens * tokens; ++i) EXPECT_EQ(p2[i], p2[tokens * tokens + i]);
  // Zero queries attend uniformly.
  std::fill(q.begin(), q.end(), 0.0f);
  const std::vector<float> uniform = CausalAttentionProbs(q, k, tokens, heads, kv_heads, dim, 1);
  EXPECT_NEAR(uniform[(2 * tokens + 3) * tokens + 1], 0.25f, 1e-7);
}

TEST(ProbabilitySimilarityTest, IdenticalHeadsScoreOne) {
  const int tokens = 3, heads = 2;
  // Head 0 attends to the first token, head 1 to the last.
  const std::vector<float> p = {1, 0, 0, 1, 0, 0, 1, 0, 0,  // head 0
                                1, 0, 0, 0, 1, 0, 0, 0, 1};
  const std::vector<double> sim = ProbabilitySimilarity(p, p, tokens, heads);
  EXPECT_NEAR(sim[0], 1.0, 1e-12);
  EXPECT_NEAR(sim[3], 1.0, 1e-12);
  EXPECT_NEAR(sim[1], 0.0, 1e-12);  // rows 1 and 2 are orthogonal
}

TEST(ChaiFeaturesTest, ConcatenatesEachGroupsWindowRows) {
  const int tokens = 3, heads = 2, window = 2;
  std::vector<float> p(heads * tokens * tokens);
  std::iota(p.begin(), p.end(), 0.0f);
  // One KV head: both query heads' top-left 2 x 2 blocks.
  EXPECT_THAT(ChaiFeatures(p, tokens, heads, 1, window), ElementsAre(0, 1, 3, 4, 9, 10, 12, 13));
}

TEST(DropScoreTest, CosineOfInputAndOutput) {
  DropScore score;
  const std::vector<float> x = {1, 0, 0, 2};
  score.Add(x, std::vector<float>{0, 0, 0, 0}, 2);  // a = 0: cos 1 for both tokens
  EXPECT_NEAR(score.mean(), 1.0, 1e-12);
  score.Add(std::vector<float>{1, 0}, std::vector<float>{-1, 1}, 2);  // x + a = (0, 1): cos 0
  EXPECT_NEAR(score.mean(), 2.0 / 3.0, 1e-12);
  EXPECT_EQ(score.count(), 3);
}

}  // namespace
}  // namespace kvfold
