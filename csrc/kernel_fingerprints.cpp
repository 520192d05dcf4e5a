// torch.ops.vitfast.kernel_fingerprints(): the source fingerprint of each CUDA kernel family this build
// compiled, "family=hex;..." (vitfast/fingerprints.py computes them; setup.py writes the header).
#include <torch/library.h>

#include <string>

#include "generated/kernel_fingerprints.h"

TORCH_LIBRARY_FRAGMENT(vitfast, m) {
  m.def("kernel_fingerprints() -> str", [] { return std::string(VITFAST_KERNEL_FINGERPRINTS); });
}
