// libFuzzer target: ParseSafetensors must turn any byte string into tensors or an error, never
// crash, and never hand out a view outside the input.
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>

#include "glog/logging.h"
#include "worker/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  std::map<std::string, std::string> metadata;
  auto tensors = kvfold::ParseSafetensors(bytes, "fuzz.safetensors", &metadata);
  if (!tensors.ok()) return 0;
  // Touch every byte of every view: ASan flags any view that leaves the input.
  uint8_t checksum = 0;
  for (const kvfold::SafetensorsTensor& t : *tensors) {
    const auto* begin = static_cast<const uint8_t*>(t.data);
    CHECK(begin >= data && begin + t.nbytes <= data + size) << t.name;
    for (size_t i = 0; i < t.nbytes; ++i) checksum ^= begin[i];
  }
  volatile uint8_t sink = checksum;
  (void)sink;
  return 0;
}
