#pragma once
// Operands for kernels that read rows with 16-byte vector loads (the GEMMs' cp.async and TMA,
// layer_norm's uint4 loads): contiguous and 16-byte aligned. A fresh allocation is both, so only
// views that are not get copied.
#include <ATen/core/Tensor.h>

#include <cstdint>

namespace vitfast {

inline bool aligned16(const at::Tensor& t) { return reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0; }
inline at::Tensor dense(const at::Tensor& t) { return !t.is_contiguous() ? t.contiguous() : aligned16(t) ? t : t.clone(); }

}  // namespace vitfast
