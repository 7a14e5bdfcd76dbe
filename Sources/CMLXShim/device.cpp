// Which device MLX runs ops on: the CPU, or the GPU of MLX's CUDA build. The shim's fast kernels are CPU primitives;
// the Swift side switches them off on the GPU, where the same model code runs on MLX's own GPU ops.
#include <cstring>
#include <string>

#include "mlx/backend/cuda/cuda.h"
#include "mlx/backend/gpu/device_info.h"
#include "mlx/device.h"
#include "mlxshim.h"
#include "shim_internal.h"

namespace mx = mlx::core;

extern "C" {

int mlxs_gpu_available(void) {
  try {
    return mx::gpu::is_available() && mx::gpu::device_count() > 0 ? 1 : 0;
  } catch (...) {
    return 0;  // the CUDA build on a machine without a driver or device
  }
}

int mlxs_cuda_build(void) {
  try {
    return mx::cu::is_available() ? 1 : 0;
  } catch (...) {
    return 1;  // the CUDA backend is compiled in and failed to start
  }
}

int mlxs_set_default_device(int gpu) {
  try {
    if (gpu && !mlxs_gpu_available()) {
      mlxshim::set_error(mlxs_cuda_build() ? "MLX's CUDA build found no usable NVIDIA GPU on this machine"
                                           : "this build uses MLX's CPU backend (mlx-cpu), which has no GPU");
      return -1;
    }
    mx::set_default_device(gpu ? mx::Device(mx::Device::gpu) : mx::Device(mx::Device::cpu));
    return 0;
  } catch (const std::exception& e) {
    mlxshim::set_error(e.what());
    return -1;
  }
}

int mlxs_default_device_is_gpu(void) { return mx::default_device().type == mx::Device::gpu ? 1 : 0; }

size_t mlxs_gpu_name(char* buf, size_t size) {
  std::string name;
  if (mlxs_gpu_available()) {
    try {
      const auto& info = mx::gpu::device_info(0);
      auto it = info.find("device_name");
      if (it != info.end() && std::holds_alternative<std::string>(it->second)) name = std::get<std::string>(it->second);
    } catch (...) {
    }
  }
  if (buf && size > 0) {
    size_t n = std::min(size - 1, name.size());
    std::memcpy(buf, name.data(), n);
    buf[n] = 0;
  }
  return name.size();
}

}  // extern "C"
