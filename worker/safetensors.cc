#include "worker/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <optional>
#include <set>
#include <utility>

#include "absl/memory/memory.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "glog/logging.h"
#include "nlohmann/json.hpp"
#include "worker/status_macros.h"

namespace kvfold {
namespace {

using Json = nlohmann::json;

// Debian's Abseil predates absl::string_view aliasing std::string_view; convert at the seams.
absl::string_view Sv(std::string_view s) { return absl::string_view(s.data(), s.size()); }

// Names and parser messages from a corrupt file can be megabytes; errors quote a prefix.
absl::string_view Clip(absl::string_view s) { return s.substr(0, 256); }

// A header is JSON text describing tensors; real ones are kilobytes. The bound keeps a corrupt
// length from making us parse (or allocate for) gigabytes.
constexpr uint64_t kMaxHeaderBytes = 100 * 1000 * 1000;

absl::Status Invalid(absl::string_view source, absl::string_view message) {
  return absl::InvalidArgumentError(absl::StrCat(source, ": ", message));
}

absl::Status TensorError(absl::StatusCode code, absl::string_view source, absl::string_view tensor,
                         absl::string_view message) {
  return absl::Status(code, absl::StrCat("tensor ", Clip(tensor), " in ", source, ": ", message));
}

// "[2, 3]"; a corrupt file's shape may have millions of dimensions, so at most 8 are shown.
std::string ShapeString(const std::vector<int64_t>& shape) {
  constexpr size_t kMaxShown = 8;
  if (shape.size() <= kMaxShown) return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
  return absl::StrCat("[", absl::StrJoin(shape.begin(), shape.begin() + kMaxShown, ", "), ", ... (",
                      shape.size(), " dimensions)]");
}

// Dtypes the format defines that kvfold cannot compute with (yet): Unimplemented, not corrupt.
bool IsKnownUnsupportedDtype(std::string_view name) {
  static constexpr std::string_view kKnown[] = {
      "F64", "I64",  "U64",     "I32",     "U32",     "I16",     "U16",     "I8",
      "U8",  "BOOL", "F8_E4M3", "F8_E5M2", "F8_E8M0", "F6_E2M3", "F6_E3M2", "F4"};
  return std::find(std::begin(kKnown), std::end(kKnown), name) != std::end(kKnown);
}

absl::Status ParseDtype(const Json& value, absl::string_view source, absl::string_view name,
                        DType* out) {
  if (!value.is_string()) {
    return TensorError(absl::StatusCode::kInvalidArgument, source, name,
                       absl::StrCat("'dtype' must be a string, got ", value.type_name()));
  }
  const std::string& dtype = value.get_ref<const std::string&>();
  for (DType t : {DType::kF32, DType::kF16, DType::kBF16}) {
    if (dtype == DTypeName(t)) {
      *out = t;
      return absl::OkStatus();
    }
  }
  if (IsKnownUnsupportedDtype(dtype)) {
    return TensorError(absl::StatusCode::kUnimplemented, source, name,
                       absl::StrCat("dtype ", dtype, " is not supported (F32, F16, BF16)"));
  }
  return TensorError(absl::StatusCode::kInvalidArgument, source, name,
                     absl::StrCat("unknown dtype '", Clip(dtype), "'"));
}

// A list of non-negative integers that fit int64 (larger ones could never describe a file).
absl::Status ParseUintList(const Json& value, absl::string_view field, absl::string_view source,
                           absl::string_view name, std::vector<int64_t>* out) {
  auto error = [&](absl::string_view what) {
    return TensorError(absl::StatusCode::kInvalidArgument, source, name,
                       absl::StrCat("'", field, "' ", what));
  };
  if (!value.is_array()) {
    return error(absl::StrCat("must be a list of non-negative integers, got ", value.type_name()));
  }
  out->clear();
  for (const Json& item : value) {
    // Negative numbers parse as number_integer, not number_unsigned.
    if (!item.is_number_unsigned()) return error("must hold non-negative integers only");
    const uint64_t v = item.get<uint64_t>();
    if (v > uint64_t{std::numeric_limits<int64_t>::max()}) {
      return error(absl::StrCat("holds ", v, ", which is too large"));
    }
    out->push_back(static_cast<int64_t>(v));
  }
  return absl::OkStatus();
}

// numel x dtype size, or nullopt if that overflows.
std::optional<uint64_t> ByteSize(const std::vector<int64_t>& shape, DType dtype) {
  uint64_t n = DTypeSize(dtype);
  for (int64_t dim : shape) {
    if (__builtin_mul_overflow(n, static_cast<uint64_t>(dim), &n)) return std::nullopt;
  }
  return n;
}

// One tensor entry of the header; `data` is the data section after the header.
absl::Status ParseTensor(const std::string& name, const Json& entry, absl::string_view source,
                         std::string_view data, SafetensorsTensor* out) {
  auto error = [&](absl::string_view what) {
    return TensorError(absl::StatusCode::kInvalidArgument, source, name, what);
  };
  if (!entry.is_object()) {
    return error(absl::StrCat("entry must be an object, got ", entry.type_name()));
  }
  for (const char* key : {"dtype", "shape", "data_offsets"}) {
    if (!entry.contains(key)) return error(absl::StrCat("entry has no '", key, "'"));
  }
  out->name = name;
  KVFOLD_RETURN_IF_ERROR(ParseDtype(entry["dtype"], source, name, &out->dtype));
  std::vector<int64_t> offsets;
  KVFOLD_RETURN_IF_ERROR(ParseUintList(entry["shape"], "shape", source, name, &out->shape));
  KVFOLD_RETURN_IF_ERROR(
      ParseUintList(entry["data_offsets"], "data_offsets", source, name, &offsets));
  if (offsets.size() != 2) return error("'data_offsets' must be [begin, end]");
  const uint64_t begin = offsets[0], end = offsets[1];
  const std::string range = absl::StrCat("data_offsets [", begin, ", ", end, "]");
  if (begin > end) return error(absl::StrCat(range, " are reversed"));
  if (end > data.size()) {
    return error(
        absl::StrCat(range, " run past the end of the ", data.size(), "-byte data section"));
  }
  const std::optional<uint64_t> nbytes = ByteSize(out->shape, out->dtype);
  if (!nbytes.has_value()) {
    return error(absl::StrCat("shape ", ShapeString(out->shape), " overflows"));
  }
  if (end - begin != *nbytes) {
    return error(absl::StrCat(range, " span ", end - begin, " bytes but shape ",
                              ShapeString(out->shape), " of ", Sv(DTypeName(out->dtype)), " needs ",
                              *nbytes));
  }
  out->data = data.data() + begin;
  out->nbytes = *nbytes;
  return absl::OkStatus();
}

absl::Status ParseMetadata(const Json& value, absl::string_view source,
                           std::map<std::string, std::string>* metadata) {
  if (!value.is_object()) {
    return Invalid(source, absl::StrCat("__metadata__ must be an object, got ", value.type_name()));
  }
  for (const auto& [key, item] : value.items()) {
    if (!item.is_string()) {
      return Invalid(source, absl::StrCat("__metadata__ value for '", Clip(key),
                                          "' must be a string, got ", item.type_name()));
    }
    if (metadata != nullptr) (*metadata)[key] = item.get<std::string>();
  }
  return absl::OkStatus();
}

// Tensors may not share bytes; empty tensors occupy none and never overlap.
absl::Status CheckNoOverlap(const std::vector<SafetensorsTensor>& tensors,
                            absl::string_view source) {
  std::vector<const SafetensorsTensor*> sorted;
  for (const SafetensorsTensor& t : tensors) {
    if (t.nbytes > 0) sorted.push_back(&t);
  }
  auto begin = [](const SafetensorsTensor* t) { return static_cast<const char*>(t->data); };
  std::sort(sorted.begin(), sorted.end(),
            [&](const auto* a, const auto* b) { return begin(a) < begin(b); });
  for (size_t i = 1; i < sorted.size(); ++i) {
    const SafetensorsTensor* prev = sorted[i - 1];
    if (begin(sorted[i]) < begin(prev) + prev->nbytes) {
      return TensorError(absl::StatusCode::kInvalidArgument, source, sorted[i]->name,
                         absl::StrCat("data overlaps tensor ", Clip(prev->name)));
    }
  }
  return absl::OkStatus();
}

// A valid header nests 3 deep ({"w": {"shape": [...]}}). Deeper nesting is refused while
// parsing: 100 MB of '[' would otherwise build 100 million nested arrays (gigabytes).
constexpr int kMaxHeaderDepth = 8;
struct HeaderTooDeep {};

// Parses the header JSON. Duplicate top-level keys are rejected: JSON parsers disagree on which
// one wins, so a file with them means different things to different readers.
absl::StatusOr<Json> ParseHeaderJson(absl::string_view text, absl::string_view source) {
  std::set<std::string> keys;
  std::string duplicate;
  auto on_event = [&](int depth, Json::parse_event_t event, Json& parsed) {
    const bool opens =
        event == Json::parse_event_t::object_start || event == Json::parse_event_t::array_start;
    if (opens && depth > kMaxHeaderDepth) throw HeaderTooDeep{};  // caught below
    if (event == Json::parse_event_t::key && depth == 1 && parsed.is_string()) {
      if (!keys.insert(parsed.get<std::string>()).second && duplicate.empty()) {
        duplicate = parsed.get<std::string>();
      }
    }
    return true;
  };
  Json json;
  try {
    json = Json::parse(text.begin(), text.end(), on_event);
  } catch (const Json::exception& e) {
    return Invalid(source, absl::StrCat("header is not valid JSON: ", Clip(e.what())));
  } catch (const HeaderTooDeep&) {
    return Invalid(source, absl::StrCat("header JSON nests deeper than ", kMaxHeaderDepth));
  }
  if (!json.is_object()) {
    return Invalid(source, absl::StrCat("header must be a JSON object, got ", json.type_name()));
  }
  if (!duplicate.empty()) {
    return TensorError(absl::StatusCode::kInvalidArgument, source, duplicate,
                       "appears twice in the header");
  }
  return json;
}

}  // namespace

absl::StatusOr<std::vector<SafetensorsTensor>> ParseSafetensors(
    std::string_view bytes, std::string_view source, std::map<std::string, std::string>* metadata) {
  if (bytes.size() < 8) {
    return Invalid(Sv(source), absl::StrCat("file is ", bytes.size(),
                                            " bytes, too short for the 8-byte header length"));
  }
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | static_cast<uint8_t>(bytes[i]);
  if (header_len > kMaxHeaderBytes) {
    return Invalid(Sv(source), absl::StrCat("header length ", header_len, " exceeds the ",
                                            kMaxHeaderBytes, "-byte limit"));
  }
  if (header_len > bytes.size() - 8) {
    return Invalid(Sv(source),
                   absl::StrCat("header length ", header_len, " runs past the end of the ",
                                bytes.size(), "-byte file"));
  }
  absl::StatusOr<Json> header = ParseHeaderJson(Sv(bytes.substr(8, header_len)), Sv(source));
  if (!header.ok()) return header.status();
  const std::string_view data = bytes.substr(8 + header_len);
  std::vector<SafetensorsTensor> tensors;
  for (const auto& [name, entry] : header->items()) {
    if (name == "__metadata__") {
      KVFOLD_RETURN_IF_ERROR(ParseMetadata(entry, Sv(source), metadata));
      continue;
    }
    SafetensorsTensor tensor;
    KVFOLD_RETURN_IF_ERROR(ParseTensor(name, entry, Sv(source), data, &tensor));
    tensors.push_back(std::move(tensor));
  }
  KVFOLD_RETURN_IF_ERROR(CheckNoOverlap(tensors, Sv(source)));
  return tensors;
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return absl::ErrnoToStatus(errno, absl::StrCat("cannot open ", path));
  struct stat st {};
  if (fstat(fd, &st) != 0) {
    const int error = errno;
    close(fd);
    return absl::ErrnoToStatus(error, absl::StrCat("cannot stat ", path));
  }
  if (!S_ISREG(st.st_mode)) {
    close(fd);
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a regular file"));
  }
  auto file = absl::WrapUnique(new SafetensorsFile());
  file->path_ = path;
  file->mapping_size_ = static_cast<size_t>(st.st_size);
  if (file->mapping_size_ > 0) {
    // Read-only and private: weights are never written through these views.
    void* mapping = mmap(nullptr, file->mapping_size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (mapping == MAP_FAILED) {
      const int error = errno;
      close(fd);
      return absl::ErrnoToStatus(error, absl::StrCat("cannot mmap ", path));
    }
    file->mapping_ = mapping;
  }
  close(fd);  // the mapping keeps the file alive
  std::string_view bytes(static_cast<const char*>(file->mapping_), file->mapping_size_);
  absl::StatusOr<std::vector<SafetensorsTensor>> tensors =
      ParseSafetensors(bytes, path, &file->metadata_);
  if (!tensors.ok()) return tensors.status();
  file->tensors_ = *std::move(tensors);
  file->AlignTensors();
  return file;
}

void SafetensorsFile::AlignTensors() {
  size_t num_copied = 0;
  for (SafetensorsTensor& t : tensors_) {
    if (reinterpret_cast<uintptr_t>(t.data) % DTypeSize(t.dtype) == 0) continue;
    // operator new[] aligns to at least alignof(std::max_align_t), enough for every dtype.
    auto copy = std::make_unique<char[]>(t.nbytes);
    std::memcpy(copy.get(), t.data, t.nbytes);
    t.data = copy.get();
    aligned_copies_.push_back(std::move(copy));
    ++num_copied;
  }
  if (num_copied > 0) {
    LOG(WARNING) << path_ << ": " << num_copied
                 << " tensor(s) not aligned to their dtype in the file; copied to memory";
  }
}

SafetensorsFile::~SafetensorsFile() {
  if (mapping_ != nullptr) munmap(mapping_, mapping_size_);
}

const SafetensorsTensor* SafetensorsFile::Find(std::string_view name) const {
  // ParseSafetensors returns tensors sorted by name (the JSON object's order).
  auto it =
      std::lower_bound(tensors_.begin(), tensors_.end(), name,
                       [](const SafetensorsTensor& t, std::string_view n) { return t.name < n; });
  return it != tensors_.end() && it->name == name ? &*it : nullptr;
}

}  // namespace kvfold
