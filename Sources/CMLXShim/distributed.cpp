// MLX's distributed backends (ring over TCP, MPI, NCCL on the CUDA build) for data-parallel training: one process
// group per process, initialised from the environment MLX's own launcher sets (MLX_RANK, MLX_HOSTFILE, ...).
#include <optional>
#include <string>

#include "mlx/distributed/distributed.h"
#include "mlx/distributed/ops.h"
#include "mlx/mlx.h"
#include "mlxshim.h"
#include "shim_internal.h"

namespace mx = mlx::core;
namespace md = mlx::core::distributed;
using namespace mlxshim;

namespace {
std::optional<md::Group> world;

md::Group& group() {
  if (!world) throw std::runtime_error("distributed: not initialised (call mlxs_distributed_init first)");
  return *world;
}
}  // namespace

extern "C" {

int mlxs_distributed_available(const char* backend) {
  try {
    return md::is_available(backend ? backend : "any") ? 1 : 0;
  } catch (...) {
    return 0;
  }
}

int mlxs_distributed_init(const char* backend, int* rank, int* size) {
  try {
    if (!world) world = md::init(true, backend ? backend : "any");
    if (rank) *rank = world->rank();
    if (size) *size = world->size();
    return 0;
  } catch (const std::exception& e) {
    set_error(std::string("distributed: ") + e.what());
    return -1;
  }
}

mlxs_array mlxs_all_sum(mlxs_array x) {
  return guard([&] { return md::all_sum(unwrap(x), group()); });
}

mlxs_array mlxs_all_gather(mlxs_array x) {
  return guard([&] { return md::all_gather(unwrap(x), group()); });
}

}  // extern "C"
