// Host arrays of one op call (token ids, positions, block tables, ...) packed into one buffer, so
// the call uploads them with a single host-to-device copy.
#pragma once

#include <cstddef>
#include <cstring>
#include <type_traits>
#include <vector>

#include "absl/types/span.h"

namespace kvfold::cuda {

class ArgPack {
 public:
  // Appends `values`, 16-byte aligned; returns their byte offset in the pack.
  template <typename T>
  size_t Add(absl::Span<const T> values) {
    static_assert(std::is_trivially_copyable_v<T>);
    const size_t offset = (bytes_.size() + kAlign - 1) / kAlign * kAlign;
    bytes_.resize(offset + values.size() * sizeof(T));
    if (!values.empty()) {
      std::memcpy(bytes_.data() + offset, values.data(), values.size() * sizeof(T));
    }
    return offset;
  }

  const char* data() const { return bytes_.data(); }
  size_t size() const { return bytes_.size(); }

 private:
  static constexpr size_t kAlign = 16;
  std::vector<char> bytes_;
};

// The device copy of the value at byte `offset` of a pack uploaded to `base`.
template <typename T>
const T* PackedAt(const char* base, size_t offset) {
  return reinterpret_cast<const T*>(base + offset);
}

}  // namespace kvfold::cuda
