// libFuzzer target: GgufCheckpoint::Open (the GGUF header parser, the model config from metadata,
// tensor bounds, Q/K row permutation and dequantization) must turn any byte string into a
// checkpoint or an error, never crash, and never read outside the file. The input goes through
// an in-memory file (memfd), since the checkpoint maps a path.
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "glog/logging.h"
#include "worker/gguf_checkpoint.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const int fd = memfd_create("fuzz.gguf", 0);
  CHECK_GE(fd, 0);
  for (size_t written = 0; written < size;) {
    const ssize_t n = write(fd, data + written, size - written);
    CHECK_GT(n, 0);
    written += static_cast<size_t>(n);
  }
  auto checkpoint = kvfold::GgufCheckpoint::Open("/proc/self/fd/" + std::to_string(fd));
  if (checkpoint.ok()) {
    // Touch every tensor: ASan flags any view that leaves the mapping.
    const kvfold::ModelConfig& c = (*checkpoint)->config();
    auto embed = (*checkpoint)->Get("model.embed_tokens.weight", c.vocab_size, c.hidden_size);
    CHECK(embed.ok()) << embed.status();
    uint8_t checksum = 0;
    const auto* p = static_cast<const uint8_t*>(embed->data);
    for (size_t i = 0; i < embed->nbytes(); ++i) checksum ^= p[i];
    volatile uint8_t sink = checksum;
    (void)sink;
  }
  close(fd);
  return 0;
}
