"""lp_matmul: fp16 matrix products with an fp16 (FP16_16) or fp32 (FP16_32) accumulator, and epilogues.

Kernels: csrc/gemm/lp_matmul_cpu.cpp (an emulation) and _cuda.cpp (tensor cores: mma.sync m16n8k16,
SASS HMMA.16816.F16 for the fp16 accumulator, HMMA.16816.F32 for fp32).

Semantics. Operands are fp16 (other float inputs are rounded to fp16 first, nearest-even).
  accumulate="fp16": a real fp16 accumulator. K is walked in chunks of 16 (one MMA's depth); each
    chunk's 16 products enter the fp16 accumulator with one rounding per chunk.
      GPU: the tensor core forms the chunk sum internally and rounds acc + chunk to fp16 (its
           rounding direction is the hardware's, not documented; the GPU tests allow a full ulp).
      CPU: the chunk's products (exact in fp32) are summed in fp32 in k order, then
           acc = fp16(fp32(acc) + chunk_sum), round to nearest even. Deterministic; lp_matmul_ref
           reproduces it bit for bit. No emulation matches HMMA.F16 bit for bit (its internal chunk
           sum is not specified); the GPU kernel is tested against an error bound instead.
    Error bound (C = ceil(K / 16) chunks, u16 = 2^-11, u32 = 2^-24, u = u16 + u32 + u16 u32):
      |acc - exact| <= (gamma_C(u) + gamma_15(u32)) * sum_k |a_k b_k|,  gamma_n(u) = n u / (1 - n u).
  accumulate="fp32": fp32 products and sums (FP16_32); CPU: ATen's fp32 matrix product of the fp16 values.
  The epilogue then runs in fp32 on the accumulator value (+ bias, then GELU or + residual) and is
  rounded once to out_dtype (default: float16 for fp16 accumulation, float32 for fp32). This is NOT
  output-only rounding (myrtle-vision's FP16_16 emulation): the running sum itself is fp16.
No gradient: an inference operator.
"""
import torch

from ._linear_args import check_float_tensor, check_linear

__all__ = ["lp_matmul", "lp_linear", "lp_matmul_ref", "fp16_accumulation_bound"]

EPILOGUES = (None, "bias", "gelu", "gelu_tanh", "residual")
ACCUMULATE = ("fp16", "fp32")


def _args(epilogue, accumulate, out_dtype, bias, residual):
    if epilogue not in EPILOGUES:
        raise ValueError(f"epilogue must be one of {EPILOGUES}, got {epilogue!r}")
    if accumulate not in ACCUMULATE:
        raise ValueError(f"accumulate must be 'fp16' or 'fp32', got {accumulate!r}")
    if out_dtype is None:
        out_dtype = torch.float16 if accumulate == "fp16" else torch.float32
    if out_dtype not in (torch.float16, torch.float32):
        raise TypeError(f"out_dtype must be torch.float16 or torch.float32, got {out_dtype}")
    if epilogue == "bias" and bias is None:
        raise ValueError("epilogue 'bias' needs a bias tensor")
    if (epilogue == "residual") != (residual is not None):
        raise ValueError("residual must be given exactly when epilogue is 'residual'")
    return {None: "none", "bias": "none"}.get(epilogue, epilogue), out_dtype


def lp_linear(x, weight, bias=None, epilogue=None, accumulate="fp16", out_dtype=None, residual=None):
    """epilogue(x @ weight.T + bias) with weight (N, K) as stored by nn.Linear (no transposed copy)."""
    check_linear(x, weight, bias)
    check_float_tensor("residual", residual, optional=True)
    epi, out_dtype = _args(epilogue, accumulate, out_dtype, bias, residual)
    if x.shape[-1] % 8:
        raise ValueError(f"the inner dimension K ({x.shape[-1]}) must be a multiple of 8")
    if residual is not None:
        shape = (*x.shape[:-1], weight.shape[0])
        if tuple(residual.shape) != shape:
            raise ValueError(f"residual must have the output's shape {shape}, got {tuple(residual.shape)}")
        residual = residual.detach().to(out_dtype)
    return torch.ops.vitfast.lp_matmul.default(
        x.detach().half(), weight.detach().half(), None if bias is None else bias.detach(), epi, residual,
        accumulate == "fp16", out_dtype)


def lp_matmul(a, b, bias=None, epilogue=None, accumulate="fp16", out_dtype=None, *, residual=None):
    """epilogue(a @ b + bias) on fp16 operands: a (..., K), b (K, N), bias (N), K % 8 == 0.
    epilogue: None, "bias", "gelu" (erf), "gelu_tanh" or "residual" (needs `residual`, (..., N)).
    accumulate: "fp16" (FP16_16) or "fp32" (FP16_32); see the module docstring for the exact semantics."""
    check_float_tensor("a", a)
    check_float_tensor("b", b)
    if b.dim() != 2:
        raise ValueError(f"b must be 2-D (K, N), got shape {tuple(b.shape)}")
    if a.dim() < 1 or a.shape[-1] != b.shape[0]:
        raise ValueError(f"a's last dimension ({a.shape[-1] if a.dim() else None}) must equal b.shape[0] ({b.shape[0]})")
    return lp_linear(a, b.t(), bias, epilogue, accumulate, out_dtype, residual)


@torch.library.register_fake("vitfast::lp_matmul")
def _(x, weight, bias, epilogue, residual, accumulate_fp16, out_dtype):
    return x.new_empty((*x.shape[:-1], weight.shape[0]), dtype=out_dtype)


def lp_matmul_ref(a, b, bias=None, epilogue=None, accumulate="fp16", out_dtype=None, *, residual=None):
    """Pure-PyTorch twin of the CPU emulation (bit for bit): k-ordered fp32 chunk sums of 16 products
    rounded into an fp16 accumulator, or fp32 accumulation; then the fp32 epilogue."""
    epi, out_dtype = _args(epilogue, accumulate, out_dtype, bias, residual)
    A = a.detach().half().float().reshape(-1, a.shape[-1])
    B = b.detach().half().float()
    K = A.shape[1]
    if accumulate == "fp16":
        acc = torch.zeros(A.shape[0], B.shape[1], dtype=torch.float16)
        for k0 in range(0, K, 16):
            s = torch.zeros(A.shape[0], B.shape[1])
            for k in range(k0, min(k0 + 16, K)):
                s = s + A[:, k, None] * B[None, k, :]  # exact products, fp32 sums in k order
            acc = (acc.float() + s).half()
        v = acc.float()
    else:
        v = A.double() @ B.double()  # fp32 accumulation is compared within its own error, not bit for bit
        v = v.float()
    if bias is not None:
        v = v + bias.float()
    if epi in ("gelu", "gelu_tanh"):
        v = torch.nn.functional.gelu(v, approximate="tanh" if epi == "gelu_tanh" else "none")
    if epi == "residual":
        v = v + residual.to(out_dtype).float().reshape(v.shape)
    return v.to(out_dtype).reshape(*a.shape[:-1], B.shape[1])


def fp16_accumulation_bound(a, b, ulp_rounding=False):
    """Elementwise bound on |fp16-accumulated a @ b - exact| (before the output rounding), from the
    module docstring: (gamma_C(u) + gamma_15(u32)) * (|a| @ |b|) with C = ceil(K / 16).
    ulp_rounding: each accumulation may err by a whole fp16 ulp (a directed rounding), u16 = 2^-10."""
    K = a.shape[-1]
    C = -(-K // 16)
    u16, u32 = 2.0 ** (-10 if ulp_rounding else -11), 2.0**-24
    u = u16 + u32 + u16 * u32
    gamma = C * u / (1 - C * u) + 15 * u32 / (1 - 15 * u32)
    return gamma * (a.double().abs() @ b.double().abs())
