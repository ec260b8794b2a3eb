// A regex for pre-tokenizer patterns that split_patterns.h does not know, compiled once with
// PCRE2 (UTF + UCP, JIT where available) and then matched without recompiling. PCRE2 is close to
// Oniguruma, the reference's engine, for the syntax these patterns use (\p{..}, (?i:..),
// lookahead); Debian 12's PCRE2 has Unicode 14 tables, so characters assigned after that may
// classify differently from the reference (Unicode 16).
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace kvfold::tokenizer_impl {

class Pcre2Regex {
 public:
  // InvalidArgument naming `where` and PCRE2's message when `pattern` does not compile.
  static absl::StatusOr<std::unique_ptr<Pcre2Regex>> Compile(std::string_view pattern,
                                                             std::string_view where);
  ~Pcre2Regex();
  Pcre2Regex(const Pcre2Regex&) = delete;
  Pcre2Regex& operator=(const Pcre2Regex&) = delete;

  // Non-overlapping matches [begin, end) in `text` (valid UTF-8), left to right, as Rust's
  // find_iter gives them: after an empty match the search resumes one character later.
  std::vector<std::pair<size_t, size_t>> FindAll(std::string_view text) const;

 private:
  Pcre2Regex() = default;
  void* code_ = nullptr;  // pcre2_code_8
  bool jit_ = false;
};

}  // namespace kvfold::tokenizer_impl
