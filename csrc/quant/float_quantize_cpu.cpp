#include <torch/library.h>

#include "quant/elementwise_cpu.h"
#include "quant/quantize.h"

TORCH_LIBRARY_IMPL(vitfast, CPU, m) { m.impl("float_quantize", &vitfast::float_quantize_impl<vitfast::CpuLauncher>); }
