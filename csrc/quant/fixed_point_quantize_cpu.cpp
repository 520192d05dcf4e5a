#include <torch/library.h>

#include "quant/elementwise_cpu.h"
#include "quant/quantize.h"

TORCH_LIBRARY_IMPL(vitfast, CPU, m) { m.impl("fixed_point_quantize", &vitfast::fixed_point_quantize_impl<vitfast::CpuLauncher>); }
