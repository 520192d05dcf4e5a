"""Argument checks and seeds shared by the quantization operators' wrappers."""
import torch

ROUNDINGS = ("nearest", "stochastic", "nearest_away")
QUANT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def check_tensor(x, name="x"):
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in QUANT_DTYPES:
        raise TypeError(f"{name} must be a float32, float16 or bfloat16 tensor, got {x.dtype}")


def check_int(name, value, lo, hi):
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int in {lo}..{hi}, got {value!r}")
    if not lo <= value <= hi:
        raise ValueError(f"{name} must be in {lo}..{hi}, got {value}")


def check_rounding(rounding, name="rounding"):
    if rounding not in ROUNDINGS:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, ROUNDINGS))}, got {rounding!r}")


def draw_seed(rounding, generator=None):
    """The Philox key for stochastic rounding: one int64 drawn from `generator` (default: torch's
    global CPU generator, so torch.manual_seed makes runs repeat on every device). None otherwise."""
    if rounding != "stochastic":
        return None
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    device = generator.device if generator is not None else "cpu"
    seed = torch.randint(-(2**63), 2**63 - 1, (), dtype=torch.int64, generator=generator, device=device)
    return seed.cpu()


def quant_fake(x, *args):
    """Shape function of every quantizer: a contiguous tensor like x."""
    return x.new_empty(x.shape)


def register_quantizer(name):
    """The quantizer's shape function; its gradient, the straight-through estimator, is registered for the
    Autograd key in C++ (csrc/quant/quantize_autograd.cpp: no Python per call)."""
    torch.library.register_fake(name)(quant_fake)
