"""attention: fused softmax(q kᵀ · scale + bias) v on (B, H, N, d), with its gradient.

Kernels: csrc/attention/ (attention_cpu.cpp: the ATen composite, every dtype; attention_fwd_cuda.cu and
attention_bwd_cuda.cu: FlashAttention-2-style kernels for fp16/bf16 and head dims 32, 64, 80, 96, 128).
Two operators: attention_fwd -> (out, lse, logits) and attention_bwd -> (dq, dk, dv, dbias); lse is
the per-row log-sum-exp of the logits the backward needs to rebuild the probabilities, written only
when a backward will run (with_lse; attention() asks for it when grad mode is on and an input needs
a gradient).
"""
import torch

__all__ = ["attention", "attention_ref", "attention_support", "CUDA_HEAD_DIMS", "ACCUMULATE", "OUT_LAYOUTS"]

CUDA_HEAD_DIMS = (32, 64, 80, 96, 128)
CUDA_DTYPES = (torch.float16, torch.bfloat16)
DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
ACCUMULATE = (None, "fp32", "fp16")
OUT_LAYOUTS = ("bhnd", "bnhd")


def attention(q, k, v, bias=None, scale=None, return_logits=False, accumulate=None, out_layout="bhnd"):
    """softmax(q kᵀ · scale + bias) v for q, k, v of shape (B, H, N, d); returns out (B, H, N, d),
    and with return_logits=True (out, logits) where logits = q kᵀ · scale + bias, (B, H, N, N).
    out_layout="bnhd" returns out as a contiguous (B, N, H, d) instead: the output projection's
    (B, N, H·d) input by a free reshape, where (B, H, N, d) would need a transposing copy.

    q, k, v may be strided views (e.g. of one fused qkv projection); no copies are made.
    bias: additive logits broadcastable from (B or 1, H or 1, N, N) (also 2-D or 3-D); its gradient
    comes back in its own shape. Cast to q's dtype. scale: default d ** -0.5.
    accumulate: None or "fp32" (fp32 accumulation in both products), or "fp16" for float16 inputs:
    fp16 accumulators in q kᵀ and in p v (FP16_16; the CPU emulates it, see attention_cpu.cpp); like
    the hardware's, they overflow to inf past 65504. On CUDA, fp16/bf16 with d in CUDA_HEAD_DIMS run
    the fused kernels (on an H100/H200 the forward's fp16 accumulators are wgmma's); fp32/fp64 run the
    ATen composite.
    The backward rebuilds the probabilities with the forward's accumulation and accumulates its own
    products (dq, dk, dv, dbias) in fp32.
    """
    bias = _check(q, k, v, bias, scale, return_logits, accumulate)
    if out_layout not in OUT_LAYOUTS:
        raise ValueError(f"out_layout must be one of {OUT_LAYOUTS}, got {out_layout!r}")
    return _attention(q, k, v, bias, scale, return_logits, accumulate, out_layout)


def _attention(q, k, v, bias, scale, return_logits=False, accumulate=None, out_layout="bhnd"):
    """attention() on arguments its checks passed, bias as _check returns it (the model backend's,
    checked once by support()), without them: a call's Python is a training step's host time."""
    if scale is None:
        scale = q.shape[-1] ** -0.5
    with_lse = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (q, k, v, bias))
    out, _, logits = torch.ops.vitfast.attention_fwd.default(q, k, v, bias, float(scale), bool(return_logits),
                                                            accumulate == "fp16", out_layout == "bnhd", with_lse)
    return (out, logits) if return_logits else out


def attention_support(q, k, v, bias=None, dropout_p=0.0, return_attn=None):
    """None when attention(q, k, v, bias) runs these inputs fused (what the "vitfast" model backend
    asks), else the reason it cannot."""
    return support(q, k, v, bias, dropout_p, return_attn)[0]


def support(q, k, v, bias=None, dropout_p=0.0, return_attn=None):
    """(attention_support's answer, bias as _attention takes it)."""
    if dropout_p > 0:
        return "attention dropout (dropout_p > 0) is not fused", None
    if return_attn not in (None, "logits"):
        return f"return_attn={return_attn!r} needs the explicit probabilities", None
    try:
        bias = _check(q, k, v, bias, None, False, None)
    except (TypeError, ValueError) as e:
        return str(e), None
    if q.device.type == "cuda" and q.dtype not in CUDA_DTYPES:
        return f"{q.dtype} on CUDA: the fused kernels take float16/bfloat16 (SDPA is faster for this)", None
    return None, bias


def _check(q, k, v, bias, scale, return_logits, accumulate):
    """Raise TypeError/ValueError naming the argument; returns bias as a 4-D tensor of q's dtype."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dtype not in DTYPES:
            raise TypeError(f"{name} must be a float16, bfloat16, float32 or float64 tensor, got {t.dtype}")
        if t.dim() != 4:
            raise ValueError(f"{name} must be 4-D (B, H, N, d), got shape {tuple(t.shape)}")
    for name, t in (("k", k), ("v", v)):
        if t.dtype != q.dtype:
            raise TypeError(f"{name} must have q's dtype {q.dtype}, got {t.dtype}")
        if t.device != q.device:
            raise ValueError(f"{name} must be on q's device {q.device}, got {t.device}")
        if t.shape != q.shape:
            raise ValueError(f"{name} must have q's shape {tuple(q.shape)}, got {tuple(t.shape)}")
    B, H, N, d = q.shape
    if N < 1 or d < 1:
        raise ValueError(f"q must have N >= 1 tokens and head dim d >= 1, got shape {tuple(q.shape)}")
    if q.device.type == "cuda" and q.dtype in CUDA_DTYPES and d not in CUDA_HEAD_DIMS:
        raise ValueError(f"q's head dim must be one of {CUDA_HEAD_DIMS} for {q.dtype} on CUDA, got {d}")
    if scale is not None and (isinstance(scale, bool) or not isinstance(scale, (int, float))):
        raise TypeError(f"scale must be a float or None, got {type(scale).__name__}")
    if not isinstance(return_logits, bool):
        raise TypeError(f"return_logits must be a bool, got {type(return_logits).__name__}")
    if accumulate not in ACCUMULATE:
        raise ValueError(f"accumulate must be None, 'fp32' or 'fp16', got {accumulate!r}")
    if accumulate == "fp16" and q.dtype != torch.float16:
        raise ValueError(f"accumulate='fp16' needs float16 q, k, v, got {q.dtype}")
    if bias is None:
        return None
    if not isinstance(bias, torch.Tensor):
        raise TypeError(f"bias must be a torch.Tensor or None, got {type(bias).__name__}")
    if not bias.is_floating_point():
        raise TypeError(f"bias must be a floating-point tensor, got {bias.dtype}")
    if bias.device != q.device:
        raise ValueError(f"bias must be on q's device {q.device}, got {bias.device}")
    shape = tuple(bias.shape)
    if not 2 <= len(shape) <= 4:
        raise ValueError(f"bias must be broadcastable from (B or 1, H or 1, N, N), got shape {shape}")
    full = (1,) * (4 - len(shape)) + shape
    if full[2:] != (N, N) or full[0] not in (1, B) or full[1] not in (1, H):
        raise ValueError(f"bias must be broadcastable from ({B} or 1, {H} or 1, {N}, {N}), got shape {shape}")
    return bias.to(q.dtype).reshape(full)


# ---- registration: shapes for torch.compile, and the gradient --------------------------------------


@torch.library.register_fake("vitfast::attention_fwd")
def _attention_fwd_fake(q, k, v, bias, scale, return_logits, fp16_accumulate, out_bnhd=False, with_lse=True):
    B, H, N, d = q.shape
    lse_dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
    logits = q.new_empty(B, H, N, N) if return_logits else q.new_empty(0)
    out = q.new_empty(B, N, H, d) if out_bnhd else q.new_empty(B, H, N, d)
    lse = q.new_empty(B, H, N, dtype=lse_dtype) if with_lse else q.new_empty(0, dtype=lse_dtype)
    return out, lse, logits


@torch.library.register_fake("vitfast::attention_bwd")
def _attention_bwd_fake(grad_out, grad_logits, q, k, v, bias, out, lse, scale, fp16_accumulate, bias_grad):
    dbias = q.new_empty(bias.shape) if bias_grad else q.new_empty(0)
    return q.new_empty(q.shape), q.new_empty(q.shape), q.new_empty(q.shape), dbias


# The gradient: csrc/attention/attention_autograd.cpp (the Autograd key, in C++: no Python per call),
# attention_bwd from the saved inputs, output and log-sum-exp.


# ---- the pure-PyTorch twin --------------------------------------------------------------------------


def _matmul_fp16_accumulate(a, b):
    """a @ b with an fp16 running sum: each 16-wide slice of the reduction summed in fp32, then added
    to the fp16 accumulator with one rounding (the kernels' FP16_16 semantics)."""
    acc = None
    for k0 in range(0, a.shape[-1], 16):
        part = a[..., k0:k0 + 16].float() @ b[..., k0:k0 + 16, :].float()
        acc = (part if acc is None else acc.float() + part).half()
    return acc.float()


def attention_ref(q, k, v, bias=None, scale=None, return_logits=False, accumulate=None, upcast=True,
                  out_layout="bhnd"):
    """Pure-PyTorch twin (differentiable through autograd). upcast=True computes in fp32 (fp64 for
    fp64 inputs) like the op; upcast=False stays in the inputs' dtype, i.e. "plain PyTorch at the same
    precision" of the FlashAttention error rule. accumulate="fp16" follows the kernels' FP16_16
    semantics (see attention_cpu.cpp)."""
    if scale is None:
        scale = q.shape[-1] ** -0.5
    ct = (torch.float64 if q.dtype == torch.float64 else torch.float32) if upcast else q.dtype
    if accumulate == "fp16":
        s = _matmul_fp16_accumulate(q, k.transpose(-2, -1)) * scale
    else:
        s = (q.to(ct) @ k.to(ct).transpose(-2, -1)) * scale
    if bias is not None:
        s = s + bias.to(s.dtype)
    if accumulate == "fp16":
        m = s.amax(-1, keepdim=True).detach()
        m = torch.where(torch.isinf(m) & (m < 0), torch.zeros_like(m), m)
        e = (s - m).exp()
        out = _matmul_fp16_accumulate(e.half(), v) / e.sum(-1, keepdim=True)
    else:
        out = s.softmax(-1) @ v.to(s.dtype)
    out = out.to(q.dtype)
    if out_layout == "bnhd":
        out = out.transpose(1, 2).contiguous()
    return (out, s.to(q.dtype)) if return_logits else out
