#include "worker/cache_config.h"

#include <cctype>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/str_format.h"
#include "glog/logging.h"

namespace kvfold {
namespace {

struct Suffix {
  const char* name;
  double multiplier;
};

constexpr Suffix kSuffixes[] = {
    {"", 1.0},       {"b", 1.0},  {"k", 1e3},      {"kb", 1e3},     {"kib", 0x1p10},
    {"m", 1e6},      {"mb", 1e6}, {"mib", 0x1p20}, {"g", 1e9},      {"gb", 1e9},
    {"gib", 0x1p30}, {"t", 1e12}, {"tb", 1e12},    {"tib", 0x1p40},
};

}  // namespace

absl::Status CacheConfig::Validate() const {
  if (memory_bytes <= 0) return absl::InvalidArgumentError("--kv-cache-memory must be positive");
  if (kv_dtype != DType::kF32 && kv_dtype != DType::kBF16) {
    return absl::InvalidArgumentError("--kv-cache-dtype must be f32 or bf16");
  }
  if (block_size < 1 || block_size > 1024) {
    return absl::InvalidArgumentError(
        absl::StrFormat("--block-size must be in [1, 1024], not %d", block_size));
  }
  return absl::OkStatus();
}

absl::StatusOr<int64_t> ParseByteSize(std::string_view text) {
  const std::string s = absl::AsciiStrToLower(absl::StripAsciiWhitespace(std::string(text)));
  auto error = [&] {
    return absl::InvalidArgumentError(absl::StrFormat(
        "'%s' is not a byte size (examples: 512MiB, 2GiB, 1e9)", std::string(text)));
  };
  if (s.empty() || !(std::isdigit(static_cast<unsigned char>(s[0])) || s[0] == '.')) {
    return error();
  }
  char* end = nullptr;
  const double number = std::strtod(s.c_str(), &end);
  std::string suffix = absl::AsciiStrToLower(absl::StripAsciiWhitespace(std::string(end)));
  for (const Suffix& x : kSuffixes) {
    if (suffix != x.name) continue;
    const double bytes = std::floor(number * x.multiplier);
    // 2^63 is exactly representable; anything at or above it overflows int64.
    if (!std::isfinite(bytes) || bytes < 1 || bytes >= 0x1p63) return error();
    return static_cast<int64_t>(bytes);
  }
  return error();
}

absl::StatusOr<DType> ParseKvCacheDtype(std::string_view text) {
  const std::string s = absl::AsciiStrToLower(std::string(text));
  if (s == "auto" || s == "bf16" || s == "bfloat16") return DType::kBF16;
  if (s == "f32" || s == "float32" || s == "fp32") return DType::kF32;
  return absl::InvalidArgumentError(
      absl::StrFormat("--kv-cache-dtype must be auto, f32 or bf16, not '%s'", std::string(text)));
}

absl::StatusOr<int32_t> NumKvBlocks(const CacheConfig& config, size_t bytes_per_token,
                                    int32_t max_model_len) {
  if (absl::Status s = config.Validate(); !s.ok()) return s;
  CHECK_GT(bytes_per_token, 0u);
  CHECK_GT(max_model_len, 0);
  const int64_t block_bytes = static_cast<int64_t>(bytes_per_token) * config.block_size;
  const int64_t blocks = config.memory_bytes / block_bytes;
  const int64_t needed = (int64_t{max_model_len} + config.block_size - 1) / config.block_size;
  if (blocks < needed) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "--kv-cache-memory %d bytes holds %d blocks of %d tokens (%d bytes each); one sequence "
        "of --max-model-len %d tokens needs %d blocks (%d bytes): raise --kv-cache-memory or "
        "lower --max-model-len",
        config.memory_bytes, blocks, config.block_size, block_bytes, max_model_len, needed,
        needed * block_bytes));
  }
  if (blocks > std::numeric_limits<int32_t>::max()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "--kv-cache-memory %d bytes makes %d blocks, more than a block id can name; raise "
        "--block-size",
        config.memory_bytes, blocks));
  }
  return static_cast<int32_t>(blocks);
}

}  // namespace kvfold
