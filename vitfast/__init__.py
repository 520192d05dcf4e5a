"""vitfast: Vision Transformers on fused kernels, with exact low-precision number formats."""
import os

import torch

try:
    if os.environ.get("VITFAST_EXTENSION"):  # another build of the extension, e.g. a GPU sitting's debug-sync one
        torch.ops.load_library(os.environ["VITFAST_EXTENSION"])
    else:
        from . import _C  # noqa: F401  (registers the torch.ops.vitfast operators)
except (ImportError, OSError) as e:  # pragma: no cover - only when the package was not built
    raise ImportError(
        "vitfast's compiled extension (vitfast._C) is missing or does not match the installed torch "
        f"({torch.__version__}). Rebuild it against this torch: pip install --no-build-isolation ."
    ) from e

from . import kernels, layers, models, ops, quant  # noqa: E402
from .layers import get_backend, set_backend  # noqa: E402
from .models import create_model, list_models  # noqa: E402

__version__ = "0.1.0"

kernels.gate.install()  # which kernel families may run on which kind of GPU (csrc/kernel_gate.h)


def has_cuda_kernels() -> bool:
    """Whether this build of vitfast._C holds CUDA kernels (built when nvcc was found at install).

    Says nothing about whether a GPU is present now; CPU kernels serve every operator either way."""
    return torch._C._dispatch_has_kernel_for_dispatch_key("vitfast::float_quantize", "CUDA")


def kernel_fingerprints() -> dict:
    """{family: fingerprint} of what each CUDA kernel family of this build was compiled from and with
    (vitfast/kernels/fingerprints.py): `python -m vitfast.check --gpu` records the ones whose self-tests
    pass on a GPU."""
    return kernels.gate.built_fingerprints()


__all__ = ["has_cuda_kernels", "kernel_fingerprints", "create_model", "list_models", "set_backend", "get_backend", "layers", "models",
           "ops", "quant", "__version__"]
