#include "kernels/cpu/isa.h"

#include <cstdlib>
#include <string>

namespace kvfold::cpu {

std::string_view IsaName(Isa isa) {
  switch (isa) {
    case Isa::kGeneric:
      return "generic";
    case Isa::kAvx2:
      return "avx2";
    case Isa::kAvx512:
      return "avx512";
  }
  return "?";
}

bool IsaSupported(Isa isa) {
  switch (isa) {
    case Isa::kGeneric:
      return true;
    case Isa::kAvx2:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c");
    case Isa::kAvx512:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vl");
  }
  return false;
}

Isa BestIsa() {
  if (IsaSupported(Isa::kAvx512)) return Isa::kAvx512;
  if (IsaSupported(Isa::kAvx2)) return Isa::kAvx2;
  return Isa::kGeneric;
}

absl::StatusOr<Isa> ParseIsa(std::string_view name) {
  if (name.empty()) return BestIsa();
  for (Isa isa : {Isa::kGeneric, Isa::kAvx2, Isa::kAvx512}) {
    if (name != IsaName(isa)) continue;
    if (!IsaSupported(isa)) {
      return absl::InvalidArgumentError(
          "KVFOLD_ISA=" + std::string(name) +
          ": this CPU does not support it (best: " + std::string(IsaName(BestIsa())) + ")");
    }
    return isa;
  }
  return absl::InvalidArgumentError("KVFOLD_ISA=" + std::string(name) +
                                    ": expected generic, avx2 or avx512");
}

absl::StatusOr<Isa> IsaFromEnv() {
  const char* value = std::getenv("KVFOLD_ISA");
  return ParseIsa(value == nullptr ? "" : value);
}

}  // namespace kvfold::cpu
