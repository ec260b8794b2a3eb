// The return-on-error idiom for absl::StatusOr, which Debian 12's Abseil lacks.
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define KVFOLD_CONCAT_INNER(a, b) a##b
#define KVFOLD_CONCAT(a, b) KVFOLD_CONCAT_INNER(a, b)

// KVFOLD_ASSIGN_OR_RETURN(auto x, MakeX()); returns MakeX()'s status if it is an error.
#define KVFOLD_ASSIGN_OR_RETURN(lhs, expr) \
  KVFOLD_ASSIGN_OR_RETURN_IMPL(KVFOLD_CONCAT(kvfold_statusor_, __LINE__), lhs, expr)
#define KVFOLD_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                                 \
  if (!tmp.ok()) return tmp.status();                \
  lhs = std::move(*tmp)

#define KVFOLD_RETURN_IF_ERROR(expr)          \
  do {                                        \
    if (absl::Status s_ = (expr); !s_.ok()) { \
      return s_;                              \
    }                                         \
  } while (0)
