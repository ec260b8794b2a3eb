// Device copies of op arguments that repeat step after step (a layer's attention head groups),
// uploaded the first time their bytes are seen and reused after, so a staged step uploads nothing
// per op and a captured step graph can read them (nothing may be uploaded while capturing).
#pragma once

#include <cuda_runtime_api.h>

#include <string>

#include "absl/container/flat_hash_map.h"
#include "kernels/cuda/arg_pack.h"

namespace kvfold::cuda {

class ConstantStaging {
 public:
  ConstantStaging() = default;
  ~ConstantStaging();
  ConstantStaging(const ConstantStaging&) = delete;
  ConstantStaging& operator=(const ConstantStaging&) = delete;

  // The device copy of `pack`'s bytes, uploaded on `stream` when first seen. While `stream` is
  // capturing, the bytes must have been seen before (an eager step of the same shapes ran first).
  const char* Get(const ArgPack& pack, cudaStream_t stream);
  size_t bytes() const { return bytes_; }

 private:
  absl::flat_hash_map<std::string, void*> copies_;
  size_t bytes_ = 0;
};

}  // namespace kvfold::cuda
