// Flags every model-running command shares.
#pragma once

#include <string>

#include "absl/flags/declare.h"

ABSL_DECLARE_FLAG(std::string, model);
ABSL_DECLARE_FLAG(int, threads);
ABSL_DECLARE_FLAG(std::string, attention_plan);
ABSL_DECLARE_FLAG(std::string, device);
ABSL_DECLARE_FLAG(bool, enforce_eager);
