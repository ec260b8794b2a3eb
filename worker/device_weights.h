// How a host weight is stored on a device backend. The CUDA backend multiplies F32/F16/BF16
// weights only, so llama.cpp's block-quantized types (a GGUF's Q8_0/Q4_0/Q4_1) are dequantized on
// the host with the CPU backend's own dequantizer (kernels/cpu/quant.h) and rounded to BF16 before
// upload: 16 bits per weight instead of 4.5-8.5, so GPU weight bytes (and the decode roofline)
// grow by that factor until quantized CUDA matmuls exist.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/ops.h"

namespace kvfold {

// The dtype a weight stored as `host` is uploaded in: BF16 for quantized types, else unchanged.
constexpr DType DeviceWeightDType(DType host) { return IsQuantized(host) ? DType::kBF16 : host; }

// The rows of `host` (any dtype) as BF16 bits, row-major, rows * cols values: each element is the
// CPU dequantizer's F32 value rounded to nearest even.
std::vector<uint16_t> ConvertToBf16(const TensorView& host);

}  // namespace kvfold
