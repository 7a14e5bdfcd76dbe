// Helpers shared by the shim's translation units (not part of the C API).
#pragma once
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
}  // namespace mlxshim
