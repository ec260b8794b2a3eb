// The tensor-parallel flags of `generate` and `serve` (their --help lists this file's flags).
#pragma once

#include <string>

#include "absl/flags/declare.h"

ABSL_DECLARE_FLAG(int, tensor_parallel_size);
ABSL_DECLARE_FLAG(int, tensor_parallel_timeout);
ABSL_DECLARE_FLAG(int, nnodes);
ABSL_DECLARE_FLAG(int, node_rank);
ABSL_DECLARE_FLAG(std::string, leader_address);
ABSL_DECLARE_FLAG(std::string, node_address);
