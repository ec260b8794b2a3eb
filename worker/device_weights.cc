#include "worker/device_weights.h"

#include "kernels/cpu/numerics.h"
#include "kernels/cpu/quant.h"

namespace kvfold {

std::vector<uint16_t> ConvertToBf16(const TensorView& host) {
  std::vector<uint16_t> out(static_cast<size_t>(host.numel()));
  std::vector<float> row(static_cast<size_t>(host.cols));
  const auto* bytes = static_cast<const char*>(host.data);
  for (int64_t r = 0; r < host.rows; ++r) {
    cpu::DequantizeRow(bytes + r * host.row_bytes(), host.dtype, host.cols, row.data());
    uint16_t* dst = out.data() + r * host.cols;
    for (int64_t c = 0; c < host.cols; ++c) dst[c] = cpu::F32ToBf16(row[c]);
  }
  return out;
}

}  // namespace kvfold
