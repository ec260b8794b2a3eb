// Decode roofline: bytes one decode step reads and the tokens/s that a memory bandwidth allows.
//   build/bench/kvfold_roofline --model=PATH [--bandwidth_gbs=G] [--context=N] [--batch=B]
//                               [--kv_dtype=bf16|f32]
// Bandwidth: kvfold_membw_bench's BM_Read (sustained, buffer >> L3).
#include <cstdio>
#include <string>

#include "absl/strings/numbers.h"
#include "bench/decode_bytes.h"
#include "worker/model_loader.h"

int main(int argc, char** argv) {
  std::string model, kv = "bf16";
  double bandwidth_gbs = 0;
  int64_t context = 128, batch = 1;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&](const char* key) -> const char* {
      const std::string k = std::string("--") + key + "=";
      return a.rfind(k, 0) == 0 ? argv[i] + k.size() : nullptr;
    };
    bool ok = true;
    if (const char* v = value("model")) {
      model = v;
    } else if (const char* v = value("kv_dtype")) {
      kv = v;
    } else if (const char* v = value("bandwidth_gbs")) {
      ok = absl::SimpleAtod(v, &bandwidth_gbs);
    } else if (const char* v = value("context")) {
      ok = absl::SimpleAtoi(v, &context);
    } else if (const char* v = value("batch")) {
      ok = absl::SimpleAtoi(v, &batch);
    } else {
      ok = false;
    }
    if (!ok) {
      std::fprintf(stderr, "kvfold_roofline: bad argument %s\n", argv[i]);
      return 2;
    }
  }
  if (model.empty() || (kv != "bf16" && kv != "f32")) {
    std::fprintf(stderr,
                 "usage: kvfold_roofline --model=PATH [--bandwidth_gbs=G] [--context=N] "
                 "[--batch=B] [--kv_dtype=bf16|f32]\n");
    return 2;
  }
  auto source = kvfold::OpenWeights(model);
  if (!source.ok()) {
    std::fprintf(stderr, "kvfold_roofline: %s\n", std::string(source.status().message()).c_str());
    return 1;
  }
  auto bytes = kvfold::ComputeDecodeBytes(
      **source, kv == "bf16" ? kvfold::DType::kBF16 : kvfold::DType::kF32);
  if (!bytes.ok()) {
    std::fprintf(stderr, "kvfold_roofline: %s\n", std::string(bytes.status().message()).c_str());
    return 1;
  }
  const size_t step = bytes->PerStep(context, batch);
  std::printf(
      "model: %s\nweights: %zu bytes\nembedding row: %zu bytes\n"
      "kv per token: %zu bytes (%s)\nbytes per step (batch %lld, context %lld): %zu\n",
      model.c_str(), bytes->weights, bytes->embedding_row, bytes->kv_per_token, kv.c_str(),
      static_cast<long long>(batch), static_cast<long long>(context), step);
  if (bandwidth_gbs > 0) {
    const double steps_per_s = bandwidth_gbs * 1e9 / static_cast<double>(step);
    std::printf("ceiling at %.1f GB/s: %.1f steps/s = %.1f tokens/s\n", bandwidth_gbs, steps_per_s,
                steps_per_s * static_cast<double>(batch));
  }
  return 0;
}
