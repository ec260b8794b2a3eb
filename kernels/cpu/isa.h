// Which SIMD path the CPU kernels run: the best the machine supports, or the one KVFOLD_ISA names
// (generic | avx2 | avx512). Every path gives bit-identical results (see ops.h), so forcing one
// changes speed only.
#pragma once

#include <string_view>

#include "absl/status/statusor.h"

namespace kvfold::cpu {

enum class Isa { kGeneric, kAvx2, kAvx512 };

std::string_view IsaName(Isa isa);
// avx2: AVX2 + F16C; avx512: AVX-512 F/BW/VL (quantized matmuls also need VNNI; without it they
// run the AVX2 kernel, which gives the same bits).
bool IsaSupported(Isa isa);
Isa BestIsa();
// Parses a KVFOLD_ISA value; empty means BestIsa(). Unknown names and paths this machine lacks are
// InvalidArgument.
absl::StatusOr<Isa> ParseIsa(std::string_view name);
// ParseIsa(getenv("KVFOLD_ISA")).
absl::StatusOr<Isa> IsaFromEnv();

}  // namespace kvfold::cpu
