#include "server/cli/tensor_parallel_flags.h"

#include "absl/flags/flag.h"

ABSL_FLAG(int, tensor_parallel_size, 1,
          "Ranks the model is split over (Megatron-style; on CPU each rank is a process: on this "
          "node, or one per node with --nnodes). Must divide the model's KV heads and "
          "intermediate size");
ABSL_FLAG(int, tensor_parallel_timeout, 30,
          "Seconds a tensor-parallel rank waits for its peers (joining, or one collective) before "
          "failing");
ABSL_FLAG(int, nnodes, 1,
          "Nodes the tensor-parallel group spans, one process each (on CPU one rank per node: "
          "--tensor-parallel-size must equal --nnodes). Every node runs the same command with "
          "its own --node-rank and the same --leader-address");
ABSL_FLAG(int, node_rank, 0,
          "This node's place in [0, --nnodes): 0 is the leader (runs the scheduler and the front "
          "ends), the others follow its steps");
ABSL_FLAG(std::string, leader_address, "",
          "HOST[:PORT] where the leader (node rank 0) serves the internal gRPC Cluster service "
          "that the other nodes join through (port: 50052 when left out; 0 on the leader: any "
          "free port, printed; the leader alone may leave the flag empty: 0.0.0.0:50052)");
ABSL_FLAG(std::string, node_address, "",
          "Address this node's rank listens on for the other ranks' connections (default: "
          "127.0.0.1 when --leader-address is a loopback address, else this host's name)");
