// A GGUF file's header: its metadata key/value pairs (every GGUF value type, arrays included,
// nested arrays too) and its tensor infos, read from a read-only memory mapping. Versions 2 and 3,
// little-endian. Every length and count is bounds-checked against the file before use; errors
// name the file and, where there is one, the key or tensor. Tensor data is not read here: a
// weight loader takes `tensor_data()` and each tensor's offset.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "absl/status/statusor.h"

namespace kvfold {

// GGUF's value type codes.
enum class GgufType : uint32_t {
  kUint8 = 0,
  kInt8 = 1,
  kUint16 = 2,
  kInt16 = 3,
  kUint32 = 4,
  kInt32 = 5,
  kFloat32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kUint64 = 10,
  kInt64 = 11,
  kFloat64 = 12,
};

std::string_view GgufTypeName(GgufType type);

struct GgufValue;

// An array's elements, held by kind: integers (and bools) widened to int64/uint64, floats to
// double. Exactly the vector that matches `element_type` is filled.
struct GgufArray {
  GgufType element_type = GgufType::kUint8;
  std::vector<int64_t> ints;    // signed integer element types and bool
  std::vector<uint64_t> uints;  // unsigned integer element types
  std::vector<double> floats;   // float32/float64
  std::vector<std::string> strings;
  std::vector<GgufArray> arrays;  // arrays of arrays
  size_t size() const;
};

struct GgufValue {
  GgufType type = GgufType::kUint8;
  std::variant<int64_t, uint64_t, double, bool, std::string, GgufArray> value;
};

struct GgufTensorInfo {
  std::string name;
  std::vector<uint64_t> dims;  // ggml order: dims[0] is the fastest-varying
  uint32_t ggml_type = 0;      // ggml_type code (0 F32, 1 F16, 3 Q4_1, ...)
  uint64_t offset = 0;         // from the start of the tensor data section
};

struct GgufHeader {
  uint32_t version = 0;
  std::map<std::string, GgufValue, std::less<>> metadata;
  std::vector<GgufTensorInfo> tensors;  // file order
  uint64_t alignment = 32;              // general.alignment, else 32
  uint64_t data_offset = 0;             // start of the tensor data section in the file
};

// Parses the header of a GGUF byte buffer. `source` names it in errors.
absl::StatusOr<GgufHeader> ParseGgufHeader(std::string_view bytes, std::string_view source);

// A memory-mapped GGUF file and its parsed header.
class GgufFile {
 public:
  static absl::StatusOr<std::unique_ptr<GgufFile>> Open(const std::string& path);
  ~GgufFile();
  GgufFile(const GgufFile&) = delete;
  GgufFile& operator=(const GgufFile&) = delete;

  const std::string& path() const { return path_; }
  const GgufHeader& header() const { return header_; }
  // The tensor data section (tensor infos' offsets are relative to its start).
  std::string_view tensor_data() const;

  // Typed metadata lookups: NotFound when absent, InvalidArgument (naming the key, the file and
  // both types) when the value has another type. Integers accept any integer type whose value
  // fits.
  const GgufValue* Find(std::string_view key) const;
  absl::StatusOr<std::string> GetString(std::string_view key) const;
  absl::StatusOr<uint64_t> GetUint(std::string_view key) const;
  absl::StatusOr<bool> GetBool(std::string_view key) const;
  absl::StatusOr<const GgufArray*> GetArray(std::string_view key, GgufType element_type) const;

 private:
  GgufFile() = default;
  std::string path_;
  void* mapping_ = nullptr;
  size_t size_ = 0;
  GgufHeader header_;
};

}  // namespace kvfold
