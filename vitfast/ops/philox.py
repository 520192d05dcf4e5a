"""Pure-PyTorch Philox4x32-10, the twin of csrc/quant/philox.h: the random words the stochastic
quantizers draw, so the *_ref functions can reproduce the kernels bit for bit."""
import torch

_M0, _M1 = 0xD2511F53, 0xCD9E8D57
_W0, _W1 = 0x9E3779B9, 0xBB67AE85
_MASK = 0xFFFFFFFF


def _mulhilo(a: int, b: torch.Tensor):
    # a * b for a < 2^32 and int64 b < 2^32, split in 16-bit halves so nothing overflows int64.
    lo16, hi16 = b & 0xFFFF, b >> 16
    p_lo = lo16 * a  # < 2^48
    p_hi = hi16 * a  # < 2^48
    mid = p_lo + ((p_hi & 0xFFFF) << 16)  # < 2^49
    return ((p_hi >> 16) + (mid >> 32)) & _MASK, mid & _MASK


def philox4x32_10(counter: torch.Tensor, seed: int) -> torch.Tensor:
    """Four words (int64 in [0, 2^32)) per int64 counter: shape counter.shape + (4,)."""
    seed &= (1 << 64) - 1
    c0, c1 = counter & _MASK, (counter >> 32) & _MASK
    c2, c3 = torch.zeros_like(c0), torch.zeros_like(c0)
    k0, k1 = seed & _MASK, seed >> 32
    for _ in range(10):
        hi0, lo0 = _mulhilo(_M0, c0)
        hi1, lo1 = _mulhilo(_M1, c2)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
        k0, k1 = (k0 + _W0) & _MASK, (k1 + _W1) & _MASK
    return torch.stack([c0, c1, c2, c3], dim=-1)


def random_words(n: int, seed) -> torch.Tensor:
    """The word element i of a quantizer's (row-major) input draws: word i % 4 of counter i // 4."""
    seed = int(seed.item()) if isinstance(seed, torch.Tensor) else int(seed)
    counters = torch.arange((n + 3) // 4, dtype=torch.int64)
    return philox4x32_10(counters, seed).reshape(-1)[:n]
