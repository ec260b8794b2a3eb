// A window into LlamaModel::Forward for calibration: each layer's attention inputs and output.
#pragma once

#include "kernels/ops.h"

namespace kvfold {

// Views of the backend's activation memory (host memory on the CPU backend), valid during the
// call only. Rows are the batch's tokens.
struct AttentionActivations {
  int layer = 0;
  TensorView residual;  // the residual stream entering the layer [n, hidden]
  TensorView q;         // queries after RoPE [n, num_heads * head_dim]
  TensorView k;         // keys after RoPE [n, num_kv_heads * head_dim]
  TensorView output;    // the attention sublayer's output (after o_proj) [n, hidden]
};

class ForwardObserver {
 public:
  virtual ~ForwardObserver() = default;
  // Called for every `full` layer after its attention sublayer, before the residual add.
  virtual void OnAttention(const AttentionActivations& activations) = 0;
};

}  // namespace kvfold
