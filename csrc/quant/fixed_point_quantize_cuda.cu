// fixed_point_quantize's CUDA kernels: the elementwise driver over FixedOp for each dtype and rounding, compiled
// without torch's headers (quantize_cuda.cpp registers the op).
#include "quant/elementwise_cuda.cuh"

namespace vitfast {
VF_INSTANTIATE_ELEMENTWISE(FixedOp)
}  // namespace vitfast
