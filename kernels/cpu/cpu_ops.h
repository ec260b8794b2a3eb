// The CPU backend of the op interface: multi-threaded F32 kernels, and the numerical reference
// that other backends are tested against.
#pragma once

#include <memory>

#include "kernels/ops.h"

namespace kvfold {

// num_threads <= 0: every core.
std::unique_ptr<Ops> NewCpuOps(int num_threads = 0);

}  // namespace kvfold
