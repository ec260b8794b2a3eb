// Device sampling (kernels/cuda/sampling.h) against copying the logits to the host and sampling
// there (worker/sampler.h, one thread), per decode step: rows x vocab random logits already on the
// device, greedy and top-p (temperature 1, top_p 0.9). Built only with the CUDA backend.
//
//   kvfold_gpu_sampling_bench [--iters=20]
// Prints one line per (rows, vocab, mode): microseconds per step on the device (sampling plus
// copying the tokens back), and for the host path the logits copy alone and copy + sampling.
#include <cuda_runtime_api.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/sampling.h"
#include "worker/device_sampler.h"
#include "worker/sampler.h"

namespace kvfold {
namespace {

double MicrosSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start)
      .count();
}

int Run(int iters) {
  if (!CudaDeviceAvailable()) {
    std::printf("no CUDA device: skipped\n");
    return 0;
  }
  std::unique_ptr<DeviceSampler> sampler = *NewCudaSampler(0);
  std::printf("%-6s %-7s %-7s %12s %14s %16s\n", "rows", "vocab", "mode", "device_us",
              "host_copy_us", "host_copy+cpu_us");
  for (int32_t vocab : {49152, 128256}) {
    for (int32_t rows : {1, 64, 256}) {
      std::vector<float> logits(static_cast<size_t>(rows) * vocab);
      std::mt19937 rng(rows + vocab);
      std::normal_distribution<float> normal(0.0f, 3.0f);
      for (float& l : logits) l = normal(rng);
      float* device = nullptr;
      if (cudaMalloc(reinterpret_cast<void**>(&device), logits.size() * sizeof(float)) !=
          cudaSuccess)
        return 1;
      cudaMemcpy(device, logits.data(), logits.size() * sizeof(float), cudaMemcpyHostToDevice);
      std::vector<float> host(logits.size());
      for (const char* mode : {"greedy", "top_p"}) {
        SamplingParams params;
        if (std::strcmp(mode, "top_p") == 0)
          params = {.temperature = 1.0f, .seed = 1, .top_p = 0.9f};
        std::vector<DeviceSampleRequest> requests;
        for (int32_t r = 0; r < rows; ++r) requests.push_back({r, &params, 0, {}});
        std::vector<int32_t> tokens(rows);
        auto device_step = [&] {
          (void)sampler->Sample(device, rows, vocab, PackDeviceSamplingBatch(requests, vocab),
                                absl::MakeSpan(tokens));
        };
        device_step();  // warm-up: scratch allocation
        auto start = std::chrono::steady_clock::now();
        for (int i = 0; i < iters; ++i) device_step();
        const double device_us = MicrosSince(start) / iters;
        start = std::chrono::steady_clock::now();
        for (int i = 0; i < iters; ++i) {
          cudaMemcpy(host.data(), device, host.size() * sizeof(float), cudaMemcpyDeviceToHost);
        }
        const double copy_us = MicrosSince(start) / iters;
        const int host_iters = std::max(1, iters / 5);  // the CPU path is slow at 256 rows
        start = std::chrono::steady_clock::now();
        for (int i = 0; i < host_iters; ++i) {
          cudaMemcpy(host.data(), device, host.size() * sizeof(float), cudaMemcpyDeviceToHost);
          for (int32_t r = 0; r < rows; ++r) {
            tokens[r] =
                Sample(absl::MakeConstSpan(host.data() + static_cast<size_t>(r) * vocab, vocab),
                       params, 0);
          }
        }
        const double host_us = MicrosSince(start) / host_iters;
        std::printf("%-6d %-7d %-7s %12.1f %14.1f %16.1f\n", rows, vocab, mode, device_us, copy_us,
                    host_us);
        std::fflush(stdout);
      }
      cudaFree(device);
    }
  }
  return 0;
}

}  // namespace
}  // namespace kvfold

int main(int argc, char** argv) {
  int iters = 20;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg.rfind("--iters=", 0) == 0 && absl::SimpleAtoi(arg.substr(8), &iters) && iters > 0) {
      continue;
    }
    std::fprintf(stderr, "usage: kvfold_gpu_sampling_bench [--iters=N]\n");
    return 2;
  }
  return kvfold::Run(iters);
}
