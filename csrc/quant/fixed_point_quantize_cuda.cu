#include <torch/library.h>

#include "quant/elementwise_cuda.cuh"
#include "quant/quantize.h"

TORCH_LIBRARY_IMPL(vitfast, CUDA, m) { m.impl("fixed_point_quantize", &vitfast::fixed_point_quantize_impl<vitfast::CudaLauncher>); }
