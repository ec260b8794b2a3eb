// Where tests find their data: the repository's fixtures and, when present, ../shared.
#pragma once

#include <filesystem>
#include <optional>
#include <string>

namespace kvfold::testing {

inline std::string SourcePath(const std::string& relative) {
  return std::string(KVFOLD_SOURCE_DIR) + "/" + relative;
}

inline std::string BinaryPath(const std::string& relative) {
  return std::string(KVFOLD_BINARY_DIR) + "/" + relative;
}

// `../shared/<relative>` beside the checkout, or nullopt where the folder is absent (a user's
// clone); tests then GTEST_SKIP() with a message.
inline std::optional<std::string> SharedPath(const std::string& relative) {
  std::filesystem::path p = std::filesystem::path(KVFOLD_SOURCE_DIR) / ".." / "shared" / relative;
  if (!std::filesystem::exists(p)) return std::nullopt;
  return p.lexically_normal().string();
}

// The bundled stories260K checkpoint (models/), which most model tests run.
inline std::string StoriesPath() { return SourcePath("models/stories260K"); }

}  // namespace kvfold::testing

// Skips the current test when ../shared/<relative> is absent; otherwise binds `var` to its path.
#define KVFOLD_REQUIRE_SHARED(var, relative)                                           \
  const auto var##_opt = ::kvfold::testing::SharedPath(relative);                      \
  if (!var##_opt) GTEST_SKIP() << "../shared/" << (relative) << " is absent; skipped"; \
  const std::string var = *var##_opt
