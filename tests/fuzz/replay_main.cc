// Replays fuzz inputs without libFuzzer: runs LLVMFuzzerTestOneInput over every file named on the
// command line and every file under every folder named there. Any build (Release, ASan) can thus
// re-run a committed corpus as an ordinary test.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

bool Replay(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    std::cerr << "cannot read " << path << "\n";
    return false;
  }
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::cerr << "usage: " << argv[0] << " FILE_OR_DIR...\n";
    return 2;
  }
  int num_inputs = 0;
  for (int i = 1; i < argc; ++i) {
    std::vector<std::filesystem::path> files;
    std::error_code ec;
    if (std::filesystem::is_directory(argv[i], ec)) {
      for (const auto& entry : std::filesystem::recursive_directory_iterator(argv[i], ec)) {
        if (entry.is_regular_file()) files.push_back(entry.path());
      }
      if (ec) {
        std::cerr << "cannot list " << argv[i] << ": " << ec.message() << "\n";
        return 1;
      }
    } else {
      files.push_back(argv[i]);
    }
    std::sort(files.begin(), files.end());  // a stable order makes failures reproducible
    for (const auto& file : files) {
      if (!Replay(file)) return 1;
      ++num_inputs;
    }
  }
  if (num_inputs == 0) {
    std::cerr << "no inputs found\n";
    return 1;
  }
  std::cout << "replayed " << num_inputs << " inputs\n";
  return 0;
}
