#include "worker/gguf_metadata.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "worker/status_macros.h"

namespace kvfold {
namespace {

constexpr uint32_t kMagic = 0x46554747;  // "GGUF" read as a little-endian uint32
constexpr int kMaxArrayDepth = 4;
constexpr uint32_t kMaxDims = 4;  // GGML_MAX_DIMS

// Bytes one element of `type` takes at least (strings: their length field; arrays: type + count).
std::optional<uint64_t> MinSize(GgufType type) {
  switch (type) {
    case GgufType::kUint8:
    case GgufType::kInt8:
    case GgufType::kBool:
      return 1;
    case GgufType::kUint16:
    case GgufType::kInt16:
      return 2;
    case GgufType::kUint32:
    case GgufType::kInt32:
    case GgufType::kFloat32:
      return 4;
    case GgufType::kUint64:
    case GgufType::kInt64:
    case GgufType::kFloat64:
    case GgufType::kString:
      return 8;
    case GgufType::kArray:
      return 12;
  }
  return std::nullopt;
}

// Reads little-endian values from the buffer; every read is bounds-checked.
class Reader {
 public:
  Reader(std::string_view bytes, std::string_view source) : bytes_(bytes), source_(source) {}

  size_t pos() const { return pos_; }
  uint64_t remaining() const { return bytes_.size() - pos_; }

  absl::Status Error(std::string_view what) const {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: GGUF %s (at byte %d of %d)", source_, what, pos_, bytes_.size()));
  }

  template <typename T>
  absl::StatusOr<T> Read(std::string_view what) {
    if (remaining() < sizeof(T)) return Error(absl::StrFormat("is truncated in %s", what));
    T value;
    std::memcpy(&value, bytes_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return value;
  }

  absl::StatusOr<std::string> ReadString(std::string_view what) {
    KVFOLD_ASSIGN_OR_RETURN(const uint64_t length, Read<uint64_t>(what));
    if (length > remaining()) {
      return Error(absl::StrFormat("%s: string of %d bytes runs past the end", what, length));
    }
    std::string value(bytes_.substr(pos_, length));
    pos_ += length;
    return value;
  }

  absl::StatusOr<GgufType> ReadType(std::string_view what) {
    KVFOLD_ASSIGN_OR_RETURN(const uint32_t code, Read<uint32_t>(what));
    if (!MinSize(static_cast<GgufType>(code))) {
      return Error(absl::StrFormat("%s: unknown value type %d", what, code));
    }
    return static_cast<GgufType>(code);
  }

  absl::StatusOr<GgufValue> ReadValue(GgufType type, std::string_view what, int depth);
  absl::StatusOr<GgufArray> ReadArray(std::string_view what, int depth);

 private:
  std::string_view bytes_;
  std::string_view source_;
  size_t pos_ = 0;
};

// A fixed-size value read as `Wire` and held as `Held`.
template <typename Wire, typename Held>
absl::StatusOr<GgufValue> ReadScalar(Reader& reader, GgufType type, std::string_view what) {
  KVFOLD_ASSIGN_OR_RETURN(const Wire x, reader.Read<Wire>(what));
  return GgufValue{type, Held(x)};
}

absl::StatusOr<GgufValue> Reader::ReadValue(GgufType type, std::string_view what, int depth) {
  switch (type) {
    case GgufType::kUint8:
      return ReadScalar<uint8_t, uint64_t>(*this, type, what);
    case GgufType::kInt8:
      return ReadScalar<int8_t, int64_t>(*this, type, what);
    case GgufType::kUint16:
      return ReadScalar<uint16_t, uint64_t>(*this, type, what);
    case GgufType::kInt16:
      return ReadScalar<int16_t, int64_t>(*this, type, what);
    case GgufType::kUint32:
      return ReadScalar<uint32_t, uint64_t>(*this, type, what);
    case GgufType::kInt32:
      return ReadScalar<int32_t, int64_t>(*this, type, what);
    case GgufType::kUint64:
      return ReadScalar<uint64_t, uint64_t>(*this, type, what);
    case GgufType::kInt64:
      return ReadScalar<int64_t, int64_t>(*this, type, what);
    case GgufType::kFloat32:
      return ReadScalar<float, double>(*this, type, what);
    case GgufType::kFloat64:
      return ReadScalar<double, double>(*this, type, what);
    case GgufType::kBool: {
      KVFOLD_ASSIGN_OR_RETURN(const uint8_t x, Read<uint8_t>(what));
      if (x > 1) return Error(absl::StrFormat("%s: bool byte %d is not 0 or 1", what, x));
      return GgufValue{type, x == 1};
    }
    case GgufType::kString: {
      KVFOLD_ASSIGN_OR_RETURN(std::string x, ReadString(what));
      return GgufValue{type, std::move(x)};
    }
    case GgufType::kArray: {
      KVFOLD_ASSIGN_OR_RETURN(GgufArray x, ReadArray(what, depth + 1));
      return GgufValue{type, std::move(x)};
    }
  }
  return Error(absl::StrFormat("%s: unknown value type", what));
}

absl::StatusOr<GgufArray> Reader::ReadArray(std::string_view what, int depth) {
  if (depth > kMaxArrayDepth) {
    return Error(absl::StrFormat("%s: arrays nest deeper than %d", what, kMaxArrayDepth));
  }
  GgufArray array;
  KVFOLD_ASSIGN_OR_RETURN(array.element_type, ReadType(what));
  KVFOLD_ASSIGN_OR_RETURN(const uint64_t count, Read<uint64_t>(what));
  if (count > remaining() / *MinSize(array.element_type)) {
    return Error(absl::StrFormat("%s: array of %d elements runs past the end", what, count));
  }
  for (uint64_t i = 0; i < count; ++i) {
    KVFOLD_ASSIGN_OR_RETURN(GgufValue element, ReadValue(array.element_type, what, depth));
    std::visit(
        [&array](auto&& x) {
          using T = std::decay_t<decltype(x)>;
          if constexpr (std::is_same_v<T, int64_t>) array.ints.push_back(x);
          if constexpr (std::is_same_v<T, uint64_t>) array.uints.push_back(x);
          if constexpr (std::is_same_v<T, double>) array.floats.push_back(x);
          if constexpr (std::is_same_v<T, bool>) array.ints.push_back(x ? 1 : 0);
          if constexpr (std::is_same_v<T, std::string>) array.strings.push_back(std::move(x));
          if constexpr (std::is_same_v<T, GgufArray>) array.arrays.push_back(std::move(x));
        },
        element.value);
  }
  return array;
}

absl::Status ReadTensorInfos(Reader& reader, uint64_t count, GgufHeader* header) {
  if (count > reader.remaining() / 24) {  // name length, n_dims, type, offset at least
    return reader.Error(absl::StrFormat("claims %d tensors, more than the file can hold", count));
  }
  std::map<std::string, size_t, std::less<>> seen;
  for (uint64_t i = 0; i < count; ++i) {
    GgufTensorInfo info;
    KVFOLD_ASSIGN_OR_RETURN(info.name, reader.ReadString("a tensor name"));
    const std::string what = absl::StrFormat("tensor \"%s\"", info.name);
    KVFOLD_ASSIGN_OR_RETURN(const uint32_t n_dims, reader.Read<uint32_t>(what));
    if (n_dims == 0 || n_dims > kMaxDims) {
      return reader.Error(
          absl::StrFormat("%s has %d dimensions (1 to %d)", what, n_dims, kMaxDims));
    }
    uint64_t elements = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      KVFOLD_ASSIGN_OR_RETURN(const uint64_t dim, reader.Read<uint64_t>(what));
      if (dim > 0 && elements > (uint64_t{1} << 62) / dim) {
        return reader.Error(absl::StrFormat("%s has too many elements", what));
      }
      elements *= dim;
      info.dims.push_back(dim);
    }
    KVFOLD_ASSIGN_OR_RETURN(info.ggml_type, reader.Read<uint32_t>(what));
    KVFOLD_ASSIGN_OR_RETURN(info.offset, reader.Read<uint64_t>(what));
    if (info.offset % header->alignment != 0) {
      return reader.Error(absl::StrFormat("%s: offset %d is not a multiple of the alignment %d",
                                          what, info.offset, header->alignment));
    }
    if (!seen.try_emplace(info.name, i).second) {
      return reader.Error(absl::StrFormat("%s appears twice", what));
    }
    header->tensors.push_back(std::move(info));
  }
  return absl::OkStatus();
}

absl::Status ReadAlignment(const Reader& reader, GgufHeader* header) {
  const auto it = header->metadata.find("general.alignment");
  if (it == header->metadata.end()) return absl::OkStatus();
  const uint64_t* alignment = std::get_if<uint64_t>(&it->second.value);
  if (it->second.type != GgufType::kUint32 || alignment == nullptr || *alignment == 0 ||
      (*alignment & (*alignment - 1)) != 0) {
    return reader.Error("general.alignment must be a uint32 power of two");
  }
  header->alignment = *alignment;
  return absl::OkStatus();
}

}  // namespace

size_t GgufArray::size() const {
  return ints.size() + uints.size() + floats.size() + strings.size() + arrays.size();
}

std::string_view GgufTypeName(GgufType type) {
  static constexpr std::string_view kNames[] = {"uint8",  "int8",    "uint16", "int16",  "uint32",
                                                "int32",  "float32", "bool",   "string", "array",
                                                "uint64", "int64",   "float64"};
  const auto index = static_cast<uint32_t>(type);
  return index < std::size(kNames) ? kNames[index] : "unknown";
}

absl::StatusOr<GgufHeader> ParseGgufHeader(std::string_view bytes, std::string_view source) {
  Reader reader(bytes, source);
  KVFOLD_ASSIGN_OR_RETURN(const uint32_t magic, reader.Read<uint32_t>("the magic"));
  if (magic != kMagic) return reader.Error("magic is missing: not a GGUF file");
  GgufHeader header;
  KVFOLD_ASSIGN_OR_RETURN(header.version, reader.Read<uint32_t>("the version"));
  if (header.version != 2 && header.version != 3) {
    return reader.Error(
        absl::StrFormat("version %d is not supported (2 and 3 are; a huge number means big-endian)",
                        header.version));
  }
  KVFOLD_ASSIGN_OR_RETURN(const uint64_t num_tensors, reader.Read<uint64_t>("the tensor count"));
  KVFOLD_ASSIGN_OR_RETURN(const uint64_t num_kv, reader.Read<uint64_t>("the metadata count"));
  if (num_kv > reader.remaining() / 12) {  // key length + type + the smallest value
    return reader.Error(absl::StrFormat("claims %d metadata pairs, more than it holds", num_kv));
  }
  for (uint64_t i = 0; i < num_kv; ++i) {
    KVFOLD_ASSIGN_OR_RETURN(std::string key, reader.ReadString("a metadata key"));
    const std::string what = absl::StrFormat("metadata \"%s\"", key);
    KVFOLD_ASSIGN_OR_RETURN(const GgufType type, reader.ReadType(what));
    KVFOLD_ASSIGN_OR_RETURN(GgufValue value, reader.ReadValue(type, what, 0));
    if (!header.metadata.try_emplace(std::move(key), std::move(value)).second) {
      return reader.Error(absl::StrFormat("%s appears twice", what));
    }
  }
  KVFOLD_RETURN_IF_ERROR(ReadAlignment(reader, &header));
  KVFOLD_RETURN_IF_ERROR(ReadTensorInfos(reader, num_tensors, &header));
  const uint64_t pos = reader.pos();
  header.data_offset = (pos + header.alignment - 1) / header.alignment * header.alignment;
  if (header.data_offset > bytes.size() && !header.tensors.empty()) {
    return reader.Error("tensor data section starts past the end of the file");
  }
  return header;
}

absl::StatusOr<std::unique_ptr<GgufFile>> GgufFile::Open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return absl::NotFoundError(absl::StrFormat("cannot open %s: %s", path, std::strerror(errno)));
  }
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrFormat("%s is not a regular file", path));
  }
  const size_t size = static_cast<size_t>(st.st_size);
  void* mapping = nullptr;
  if (size > 0) {
    mapping = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (mapping == MAP_FAILED) mapping = nullptr;
  }
  ::close(fd);
  if (mapping == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: cannot map it (%d bytes): not a GGUF file", path, size));
  }
  std::unique_ptr<GgufFile> file(new GgufFile());
  file->path_ = path;
  file->mapping_ = mapping;
  file->size_ = size;
  KVFOLD_ASSIGN_OR_RETURN(
      file->header_,
      ParseGgufHeader(std::string_view(static_cast<const char*>(mapping), size), path));
  return file;
}

GgufFile::~GgufFile() {
  if (mapping_ != nullptr) ::munmap(mapping_, size_);
}

std::string_view GgufFile::tensor_data() const {
  const auto* base = static_cast<const char*>(mapping_);
  if (header_.data_offset >= size_) return {};
  return std::string_view(base + header_.data_offset, size_ - header_.data_offset);
}

const GgufValue* GgufFile::Find(std::string_view key) const {
  const auto it = header_.metadata.find(key);
  return it == header_.metadata.end() ? nullptr : &it->second;
}

namespace {

absl::Status WrongType(const GgufFile& file, std::string_view key, const GgufValue& value,
                       std::string_view wanted) {
  return absl::InvalidArgumentError(absl::StrFormat("%s: GGUF metadata \"%s\" is %s, not %s",
                                                    file.path(), key, GgufTypeName(value.type),
                                                    wanted));
}

}  // namespace

#define KVFOLD_GGUF_FIND(value, key)                                                      \
  const GgufValue* value = Find(key);                                                     \
  if (value == nullptr) {                                                                 \
    return absl::NotFoundError(                                                           \
        absl::StrFormat("%s: GGUF metadata \"%s\" is missing", path_, std::string(key))); \
  }

absl::StatusOr<std::string> GgufFile::GetString(std::string_view key) const {
  KVFOLD_GGUF_FIND(value, key);
  if (const std::string* s = std::get_if<std::string>(&value->value)) return *s;
  return WrongType(*this, key, *value, "a string");
}

absl::StatusOr<uint64_t> GgufFile::GetUint(std::string_view key) const {
  KVFOLD_GGUF_FIND(value, key);
  if (const uint64_t* u = std::get_if<uint64_t>(&value->value)) return *u;
  if (const int64_t* i = std::get_if<int64_t>(&value->value); i != nullptr && *i >= 0) {
    return static_cast<uint64_t>(*i);
  }
  return WrongType(*this, key, *value, "a non-negative integer");
}

absl::StatusOr<bool> GgufFile::GetBool(std::string_view key) const {
  KVFOLD_GGUF_FIND(value, key);
  if (const bool* b = std::get_if<bool>(&value->value)) return *b;
  return WrongType(*this, key, *value, "a bool");
}

absl::StatusOr<const GgufArray*> GgufFile::GetArray(std::string_view key,
                                                    GgufType element_type) const {
  KVFOLD_GGUF_FIND(value, key);
  const GgufArray* array = std::get_if<GgufArray>(&value->value);
  if (array == nullptr || array->element_type != element_type) {
    return WrongType(*this, key, *value,
                     absl::StrFormat("an array of %s", GgufTypeName(element_type)));
  }
  return array;
}

#undef KVFOLD_GGUF_FIND

}  // namespace kvfold
