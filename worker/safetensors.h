// A memory-mapped .safetensors file: the header is parsed and validated once; tensors are views
// into the mapping (no copies).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/ops.h"

namespace kvfold {

struct SafetensorsTensor {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  const void* data = nullptr;  // inside the mapping (see ParseSafetensors on alignment)
  size_t nbytes = 0;
};

// Parses and validates a safetensors byte buffer: header length (at most 100 MB and within the
// buffer), JSON, __metadata__ (string to string), dtypes (F32, F16, BF16; other dtypes are
// Unimplemented), shapes, offsets in bounds and consistent with shape x dtype, no overlaps, no
// duplicate names. Errors name `source` and, where there is one, the tensor. Tensors come back
// sorted by name; their `data` pointers point into `bytes` and may be unaligned for their dtype
// (the format does not promise alignment), so callers that need alignment check it.
// Exposed separately so the fuzzer can reach it.
absl::StatusOr<std::vector<SafetensorsTensor>> ParseSafetensors(
    std::string_view bytes, std::string_view source,
    std::map<std::string, std::string>* metadata = nullptr);

// A read-only, private memory mapping of one file. Every tensor's `data` is aligned for its
// dtype: the rare tensor the file places unaligned is copied to the heap once at Open. The file
// must not shrink while mapped (reading a truncated mapping is SIGBUS, as with any mmap loader).
class SafetensorsFile {
 public:
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const std::vector<SafetensorsTensor>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // nullptr when absent.
  const SafetensorsTensor* Find(std::string_view name) const;

 private:
  SafetensorsFile() = default;
  void AlignTensors();
  std::string path_;
  void* mapping_ = nullptr;
  size_t mapping_size_ = 0;
  std::vector<SafetensorsTensor> tensors_;
  std::map<std::string, std::string> metadata_;
  std::vector<std::unique_ptr<char[]>> aligned_copies_;
};

}  // namespace kvfold
