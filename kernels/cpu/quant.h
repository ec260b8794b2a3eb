// llama.cpp's quantized block formats (see DType in ops.h) and their scalar dequantization: the
// values every CPU matmul path multiplies by, so the SIMD kernels match these bit for bit.
#pragma once

#include <cstdint>
#include <cstring>

#include "kernels/cpu/numerics.h"
#include "kernels/ops.h"

namespace kvfold::cpu {

inline uint16_t LoadU16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, sizeof(v));  // blocks are packed: scales are unaligned
  return v;
}

// Dequantizes one block of 32 elements starting at `block` into out[0, 32).
inline void DequantizeBlock(const uint8_t* block, DType t, float* out) {
  const float d = F16ToF32(LoadU16(block));
  switch (t) {
    case DType::kQ8_0:
      for (int i = 0; i < 32; ++i)
        out[i] = static_cast<float>(static_cast<int8_t>(block[2 + i])) * d;
      return;
    case DType::kQ4_0:
      for (int i = 0; i < 16; ++i) {
        out[i] = static_cast<float>((block[2 + i] & 15) - 8) * d;
        out[i + 16] = static_cast<float>((block[2 + i] >> 4) - 8) * d;
      }
      return;
    case DType::kQ4_1: {
      const float m = F16ToF32(LoadU16(block + 2));
      for (int i = 0; i < 16; ++i) {
        out[i] = static_cast<float>(block[4 + i] & 15) * d + m;
        out[i + 16] = static_cast<float>(block[4 + i] >> 4) * d + m;
      }
      return;
    }
    default:
      LOG(FATAL) << "DequantizeBlock: " << DTypeName(t) << " is not quantized";
  }
}

// Converts one row of `cols` elements stored in `t` (any dtype) to F32.
inline void DequantizeRow(const void* row, DType t, int64_t cols, float* out) {
  const auto* bytes = static_cast<const uint8_t*>(row);
  if (IsQuantized(t)) {
    for (int64_t b = 0; b < cols / kQuantBlock; ++b) {
      DequantizeBlock(bytes + b * BlockBytes(t), t, out + b * kQuantBlock);
    }
    return;
  }
  for (int64_t c = 0; c < cols; ++c) {
    out[c] = t == DType::kF32    ? LoadF32()(row, c)
             : t == DType::kBF16 ? LoadBf16()(row, c)
                                 : LoadF16()(row, c);
  }
}

}  // namespace kvfold::cpu
