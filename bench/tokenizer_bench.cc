// Encode throughput of kvfold's tokenizer, single-threaded: reads a JSON array of documents,
// encodes each (no special tokens) `--repeat` times and prints one JSON line with the best time,
// MB/s and the total token count (so a driver can check it against the reference's).
// Usage: kvfold_tokenizer_bench TOKENIZER DOCUMENTS.json [REPEAT]
// bench/tokenizer_compare.py runs it beside Hugging Face `tokenizers`.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "nlohmann/json.hpp"
#include "server/tokenizer/tokenizer.h"

int main(int argc, char** argv) {
  if (argc < 3) {
    std::cerr << "usage: kvfold_tokenizer_bench TOKENIZER DOCUMENTS.json [REPEAT]\n";
    return 2;
  }
  const int repeat = argc > 3 ? std::max(1, std::atoi(argv[3])) : 3;
  auto tokenizer = kvfold::Tokenizer::FromFile(argv[1]);
  if (!tokenizer.ok()) {
    std::cerr << tokenizer.status() << "\n";
    return 1;
  }
  std::ifstream in(argv[2], std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  const nlohmann::json json = nlohmann::json::parse(text.str(), nullptr, false);
  if (!json.is_array()) {
    std::cerr << argv[2] << ": not a JSON array of strings\n";
    return 1;
  }
  std::vector<std::string> documents;
  size_t bytes = 0;
  for (const auto& item : json) {
    documents.push_back(item.get<std::string>());
    bytes += documents.back().size();
  }
  double best = 1e30;
  size_t tokens = 0;
  for (int r = 0; r < repeat; ++r) {
    tokens = 0;
    const auto start = std::chrono::steady_clock::now();
    for (const std::string& document : documents) {
      auto ids = (*tokenizer)->Encode(document, /*add_special_tokens=*/false);
      if (!ids.ok()) {
        std::cerr << ids.status() << "\n";
        return 1;
      }
      tokens += ids->size();
    }
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
                              .count());
  }
  std::printf("{\"seconds\": %.4f, \"mb_per_s\": %.2f, \"bytes\": %zu, \"tokens\": %zu}\n", best,
              bytes / best / 1e6, bytes, tokens);
  return 0;
}
