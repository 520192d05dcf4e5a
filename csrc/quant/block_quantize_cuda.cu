#include <torch/library.h>

#include "quant/elementwise_cuda.cuh"
#include "quant/quantize.h"

TORCH_LIBRARY_IMPL(vitfast, CUDA, m) { m.impl("block_quantize", &vitfast::block_quantize_impl<vitfast::CudaLauncher>); }
