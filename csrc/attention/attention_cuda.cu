// CUDA entry points of vitfast::attention_fwd / attention_bwd (fused kernels land here next).
#include <torch/library.h>

#include "attention/attention.h"

TORCH_LIBRARY_IMPL(vitfast, CUDA, m) {
  m.impl("attention_fwd", &vitfast::attention_fwd_aten);
  m.impl("attention_bwd", &vitfast::attention_bwd_aten);
}
