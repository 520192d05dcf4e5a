#include <torch/library.h>

#include "quant/elementwise_cpu.h"
#include "quant/quantize.h"

TORCH_LIBRARY_IMPL(vitfast, CPU, m) { m.impl("scaled_cast", &vitfast::scaled_cast_impl<vitfast::CpuLauncher>); }
