// The CPU backend of the op interface: multi-threaded F32 kernels, and the numerical reference
// that other backends are tested against.
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "kernels/cpu/isa.h"
#include "kernels/ops.h"

namespace kvfold {

// num_threads <= 0: every core. The SIMD path is KVFOLD_ISA's (read here, once) or the best this
// CPU supports; an unknown or unsupported KVFOLD_ISA is InvalidArgument.
absl::StatusOr<std::unique_ptr<Ops>> CreateCpuOps(int num_threads = 0);
// The same on an explicit path, which must be supported (tests run every one).
std::unique_ptr<Ops> NewCpuOps(int num_threads, cpu::Isa isa);
// CreateCpuOps, CHECK-failing with its message on a bad KVFOLD_ISA.
std::unique_ptr<Ops> NewCpuOps(int num_threads = 0);

}  // namespace kvfold
