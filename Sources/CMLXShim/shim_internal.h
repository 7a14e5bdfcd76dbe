// Helpers shared by the shim's translation units (not part of the C API).
#pragma once
#include <stdexcept>
#include <string>

#include "mlx/array.h"
#include "mlxshim.h"

namespace mlxshim {
void set_error(const std::string& message);
mlx::core::Dtype to_mlx(mlxs_dtype d);
mlxs_dtype from_mlx(mlx::core::Dtype d);
mlxs_array wrap(const mlx::core::array& a);
mlx::core::array& unwrap(mlxs_array a);
// The plain-MLX form of a unary op (the reference the fast kernels' gradients come from).
mlx::core::array unary_op(mlxs_unary_op op, const mlx::core::array& x);

// An array-returning C entry point's body: its result wrapped, or NULL with the exception's message kept.
template <typename F>
mlxs_array guard(F&& f) {
  try {
    return wrap(f());
  } catch (const std::exception& e) {
    set_error(e.what());
    return nullptr;
  } catch (...) {
    set_error("unknown C++ exception in MLX");
    return nullptr;
  }
}
}  // namespace mlxshim
