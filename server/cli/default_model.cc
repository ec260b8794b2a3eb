#include "server/cli/default_model.h"

#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <system_error>

namespace kvfold::cli {

std::string DefaultModelFile() {
  const char* cache = std::getenv("KVFOLD_CACHE_DIR");
  const char* home = std::getenv("HOME");
  std::string dir = cache != nullptr && *cache != '\0' ? cache
                    : home != nullptr                  ? std::string(home) + "/.cache/kvfold"
                                                       : ".cache/kvfold";
  return dir + "/" + kDefaultModelName;
}

std::string DefaultModelPath() {
  const std::string gguf = DefaultModelFile();
  std::error_code ec;
  if (std::filesystem::is_regular_file(gguf, ec)) return gguf;
  std::cerr << "kvfold: " << gguf << " is absent (scripts/setup.sh fetches it); using "
            << KVFOLD_FALLBACK_MODEL << "\n";
  return KVFOLD_FALLBACK_MODEL;
}

}  // namespace kvfold::cli
