#include "kernels/cpu/thread_pool.h"

#include <algorithm>

namespace kvfold {
namespace {

// Chunks per thread: enough to even out uneven items, few enough that claiming stays cheap.
constexpr int kChunksPerThread = 4;

// Chunk `index` of `parts` near-equal contiguous chunks of [0, n).
std::pair<int64_t, int64_t> Chunk(int64_t n, int parts, int index) {
  const int64_t base = n / parts, extra = n % parts;
  const int64_t begin = index * base + std::min<int64_t>(index, extra);
  return {begin, begin + base + (index < extra ? 1 : 0)};
}

}  // namespace

ThreadPool::ThreadPool(int num_threads) {
  if (num_threads <= 0) num_threads = std::max(1u, std::thread::hardware_concurrency());
  for (int i = 1; i < num_threads; ++i) workers_.emplace_back([this] { WorkerLoop(); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  start_cv_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::ParallelFor(int64_t n, const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  if (num_threads() == 1 || n == 1) {
    fn(0, n);
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    job_ = &fn;
    job_size_ = n;
    job_chunks_ = static_cast<int>(std::min<int64_t>(n, num_threads() * kChunksPerThread));
    next_chunk_.store(0, std::memory_order_relaxed);
    pending_ = num_threads() - 1;
    ++generation_;
  }
  start_cv_.notify_all();
  RunChunks();
  std::unique_lock<std::mutex> lock(mu_);
  done_cv_.wait(lock, [this] { return pending_ == 0; });
  job_ = nullptr;
}

void ThreadPool::RunChunks() {
  for (int c = next_chunk_.fetch_add(1); c < job_chunks_; c = next_chunk_.fetch_add(1)) {
    auto [begin, end] = Chunk(job_size_, job_chunks_, c);
    (*job_)(begin, end);
  }
}

void ThreadPool::WorkerLoop() {
  uint64_t seen = 0;
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      start_cv_.wait(lock, [&] { return stop_ || generation_ != seen; });
      if (stop_) return;
      seen = generation_;
    }
    RunChunks();  // job_, job_size_ and job_chunks_ stay fixed until every worker reports
    std::lock_guard<std::mutex> lock(mu_);
    if (--pending_ == 0) done_cv_.notify_one();
  }
}

}  // namespace kvfold
