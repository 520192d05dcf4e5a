"""fp8_linear: an FP8 matrix product whose epilogue applies the scales, the bias and GELU or the residual
add, and writes bf16 or the next product's e4m3 input: one link of the FP8 inference chain.

Kernels: csrc/gemm/fp8_linear_cpu.cpp (the ATen composite of fp8_linear.h) and _cuda.cpp (CUTLASS sm90
kernels, csrc/gemm/sm90/fp8_gemm_sm90.cuh: QGMMA with e4m3 operands, fp32 accumulation, built for the
FP8 chain's epilogues: no activation into bf16, GELU into e4m3, the residual; the composite for other
epilogues and on other GPUs and shapes, warned once). No gradient: an inference operator.

Semantics. x (..., K) and weight (N, K) hold e4m3 codes; their values are code * scale_a (one fp32
value) and code * scale_b[n] (one per output feature). In fp32:

    v   = (x8 @ w8ᵀ) * (scale_b[n] * scale_a) + bias[n]     the e4m3 products are exact in fp32
    activation "none" / "gelu" (erf) / "gelu_tanh":
        out = act(v) in bf16, or in e4m3 with out_scale: act(v) * (1 / out_scale) rounded to nearest
              even and saturated to ±448 (NaN stays NaN): scaled_cast's rounding
    residual (bf16, (..., N)): out = bf16(v + residual)     the residual stream
    amax=True also returns max |act(v)| (or |v + residual|), NaN if any value is NaN: the output's
        range for calibrating the next scale.

The GPU kernel sums in another order than the CPU's fp32 product and fuses the scale, bias multiply-add
into one rounding, so it agrees with fp8_linear_ref to fp32 rounding of the sum before the output's
rounding (an e4m3 output can differ by one e4m3 step where the sum lies near a rounding boundary). With
an out_scale that is a power of two (the FP8 chain's: vitfast.quant) * (1 / out_scale) is exact.
Hopper's FP8 tensor cores sum into an accumulator narrower than fp32; fp8_accumulation_bound says by how
much the kernel's sum may differ, for its configuration (the fast-accumulation one sums the whole K there).
"""
import torch

__all__ = ["fp8_linear", "fp8_linear_ref", "fp8_accumulation_bound", "ACTIVATIONS"]

ACTIVATIONS = ("none", "gelu", "gelu_tanh")
E4M3 = torch.float8_e4m3fn


def _check(x, weight, scale_a, scale_b, bias, residual, activation, out_dtype, out_scale):
    for name, t in (("x", x), ("weight", weight)):
        if not isinstance(t, torch.Tensor) or t.dtype != E4M3:
            got = t.dtype if isinstance(t, torch.Tensor) else type(t).__name__
            raise TypeError(f"{name} must be a torch.float8_e4m3fn tensor, got {got}")
    if x.dim() < 1 or weight.dim() != 2 or weight.shape[1] != x.shape[-1]:
        raise ValueError(f"weight must be (N, K) with K = x's last dimension; got x {tuple(x.shape)}, weight "
                         f"{tuple(weight.shape)}")
    n = weight.shape[0]
    for name, t, shape in (("scale_a", scale_a, None), ("scale_b", scale_b, (n,)), ("out_scale", out_scale, None)):
        if t is None and name == "out_scale":
            continue
        if not isinstance(t, torch.Tensor) or t.dtype != torch.float32:
            got = t.dtype if isinstance(t, torch.Tensor) else type(t).__name__
            raise TypeError(f"{name} must be a float32 tensor, got {got}")
        if (shape is None and t.numel() != 1) or (shape is not None and tuple(t.shape) != shape):
            raise ValueError(f"{name} must hold {'one value' if shape is None else f'shape {shape}'}, got shape "
                             f"{tuple(t.shape)}")
    if bias is not None and (not isinstance(bias, torch.Tensor) or bias.dtype not in (torch.float32, torch.bfloat16)
                             or tuple(bias.shape) != (n,)):
        raise ValueError(f"bias must be a float32 or bfloat16 tensor of shape ({n},), got "
                         f"{getattr(bias, 'dtype', type(bias).__name__)} {tuple(getattr(bias, 'shape', ()))}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    if out_dtype not in (torch.bfloat16, E4M3):
        raise TypeError(f"out_dtype must be torch.bfloat16 or torch.float8_e4m3fn, got {out_dtype}")
    if (out_dtype == E4M3) != (out_scale is not None):
        raise ValueError("out_scale must be given exactly when out_dtype is torch.float8_e4m3fn")
    if residual is not None:
        shape = (*x.shape[:-1], n)
        if not isinstance(residual, torch.Tensor) or residual.dtype != torch.bfloat16 or tuple(residual.shape) != shape:
            raise ValueError(f"residual must be a bfloat16 tensor of the output's shape {shape}, got "
                             f"{getattr(residual, 'dtype', type(residual).__name__)} "
                             f"{tuple(getattr(residual, 'shape', ()))}")
        if activation != "none" or out_dtype != torch.bfloat16:
            raise ValueError("a residual takes activation='none' and out_dtype=torch.bfloat16 (the residual stream)")
    for name, t in (("weight", weight), ("scale_a", scale_a), ("scale_b", scale_b), ("bias", bias),
                    ("residual", residual), ("out_scale", out_scale)):
        if t is not None and t.device != x.device:
            raise ValueError(f"{name} must be on x's device ({x.device}), got {t.device}")


def fp8_linear(x, weight, scale_a, scale_b, bias=None, *, residual=None, activation="none", out_dtype=torch.bfloat16,
               out_scale=None, amax=False, config="auto"):
    """The FP8 product of the module docstring. Returns out, or (out, amax) with amax=True (a 1-value
    fp32 tensor). `config` picks the Hopper kernel's configuration (csrc/gemm/sm90_config.h)."""
    from ._linear_args import check_config

    _check(x, weight, scale_a, scale_b, bias, residual, activation, out_dtype, out_scale)
    kind = ("fp8_residual" if residual is not None else "fp8_act" if out_dtype != E4M3
            else "fp8_act_e4m3_tanh" if activation == "gelu_tanh" else "fp8_act_e4m3")
    check_config(config, kind, "fp8_linear")
    out, m = torch.ops.vitfast.fp8_linear.default(x, weight, scale_a, scale_b, bias, residual, activation, out_dtype,
                                                  out_scale, bool(amax), config)
    return (out, m) if amax else out


@torch.library.register_fake("vitfast::fp8_linear")
def _(x, weight, scale_a, scale_b, bias, residual, activation, out_dtype, out_scale, amax, config="auto"):
    return x.new_empty((*x.shape[:-1], weight.shape[0]), dtype=out_dtype), x.new_empty((1 if amax else 0,),
                                                                                       dtype=torch.float32)


def fp8_linear_ref(x, weight, scale_a, scale_b, bias=None, *, residual=None, activation="none",
                   out_dtype=torch.bfloat16, out_scale=None, amax=False):
    """Pure-PyTorch twin: the steps of the module docstring in fp32, scaled_cast_ref's rounding."""
    from .scaled_cast import scaled_cast_ref

    _check(x, weight, scale_a, scale_b, bias, residual, activation, out_dtype, out_scale)
    v = x.reshape(-1, x.shape[-1]).float() @ weight.float().t()
    v = v * (scale_b * scale_a.reshape(()))  # x's scale folded into the weight's, as the kernels do
    if bias is not None:
        v = v + bias.float()
    if activation != "none":
        v = torch.nn.functional.gelu(v, approximate="tanh" if activation == "gelu_tanh" else "none")
    if residual is not None:
        v = v + residual.reshape(v.shape).float()
    m = v.abs().amax().reshape(1) if v.numel() else v.new_zeros(1)
    if out_dtype == E4M3:
        out = scaled_cast_ref(v * out_scale.reshape(()).reciprocal(), torch.ones(1, device=v.device), E4M3)
    else:
        out = v.to(torch.bfloat16)
    out = out.reshape(*x.shape[:-1], weight.shape[0])
    return (out, m) if amax else out


def fp8_accumulation_fraction(K, config="auto"):
    """The bound of fp8_accumulation_bound as a fraction of the sum of |products|. Hopper's FP8 wgmma adds
    its products into an accumulator narrower than fp32 (about 14 significant bits kept: DeepSeek-V3's
    report; 2^-13.8 of the sum of |products| measured on an H100, 2026-11-24, K = 768 and 3,072), promoted
    into fp32 every fp8_promotion_interval(config, K) wgmma instructions of 32 products. Each wgmma's
    addition, keeping 13 bits below the running sum's leading one, errs by at most 2^-13 of the |products|
    added since the last promotion: over `interval` of them, interval * 2^-13 of that chunk's sum of
    |products|, and over the chunks, of the whole sum's. The promotions' fp32 additions (K / 128 of them)
    add at most K / 128 * 2^-24 of it. GELU's slope is at most 1.13."""
    interval = torch.ops.vitfast.fp8_promotion_interval(config, K)
    return (interval * 2.0**-13 + K / 128 * 2.0**-24) * 1.13


def fp8_accumulation_bound(x8, w8, scale_a, scale_b, config="auto"):
    """Elementwise bound on |the kernel's v - fp8_linear_ref's| before the output's rounding, (M, N) for x8
    (..., K) and w8 (N, K): what the tensor cores' narrower accumulator may lose, for configuration
    `config` (csrc/gemm/sm90_config.h)."""
    K = x8.shape[-1]
    sums = x8.reshape(-1, K).float().abs() @ w8.float().abs().t()
    return fp8_accumulation_fraction(K, config) * sums * scale_a * scale_b
