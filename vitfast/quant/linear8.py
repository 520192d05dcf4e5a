"""Real 8-bit inference: Linear8, the layer convert_ptq puts in place of every nn.Linear it quantizes
with a scaled recipe (INT8, FP8_E4M3_SCALED, FP8_E5M2_SCALED; see vitfast.quant.scaled).

A Linear8 holds no fp32 weight: `weight` is (out, in) in the 8-bit dtype, `weight_scale` one fp32
scale per output channel, `input_scale` the static activation scale (None: dynamic, from each batch's
absolute maximum, computed on the device), `bias` fp32. Its forward quantizes the input in one pass
(vitfast.ops.scaled_cast) and multiplies on the 8-bit hardware path:

    FP8    torch._scaled_mm(x8, w8ᵀ, scale_a=s_x per row, scale_b=s_w per column, bias): the scales and
           bias applied once, in the product's epilogue
    INT8   torch._int_mm(x8, w8ᵀ) (an exact int32 sum), then one fused multiply-add: acc·(s_x·s_w) + bias

Where the device cannot run the format (FP8 before compute capability 8.9, or whatever the installed
torch refuses, found by one small trial call per device and format), the layer runs the emulation
instead, from the same 8-bit codes, with one warning saying why; so does a layer whose shape the CUDA
kernels do not take (FP8: in and out features multiples of 16; INT8: of 8). The emulation is
F.linear(x8·s_x, w8·s_w, bias) in fp32: bit for bit prepare_qat's / convert_ptq(..., emulate=True)'s
result, so the real path differs from it only in the order of the accumulation (and, for FP8 on
CUDA when out_dtype falls back to bf16, in the output's rounding). `path(device, dtype)` says which
runs; vitfast.quant.quantized_paths(model) sums it over a model.

A device given by the caller (path, quantized_paths, load_quantized) goes through usable_device first,
so one this process cannot run is one ValueError naming the argument, not a driver error from torch.
"""
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from ..cli import first_line
from ..ops.scaled_cast import CAST8_DTYPES, scaled_cast

__all__ = ["Linear8", "CodeBuffers", "quantized_paths", "dynamic_scale", "scale_of_amax"]

EMULATED = "emulated"
_REAL = {torch.int8: "int8 torch._int_mm", torch.float8_e4m3fn: "fp8 torch._scaled_mm",
         torch.float8_e5m2: "fp8 torch._scaled_mm"}


def usable_device(device, argument="device"):
    """`device` (a string or torch.device) as a torch.device this process can run on; otherwise a
    ValueError naming `argument`: a string torch cannot read, a backend torch says is unavailable here
    (CUDA without a driver or GPU), or an index beyond the device count."""
    text = str(device)
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"{argument} must be 'cpu', 'cuda' or 'cuda:N' (or a torch.device), got {device!r}") from None
    if dev.type == "cpu":
        return dev
    backend = getattr(torch, dev.type, None)  # torch.cuda, torch.xpu, torch.mps: each says whether it runs here
    if not hasattr(backend, "is_available"):
        raise ValueError(f"{argument}: {text!r} is not a device vitfast.quant runs on; use 'cpu' or 'cuda'")
    if not backend.is_available():
        raise ValueError(f"{argument}: {text!r} is not usable here (torch.{dev.type}.is_available() is False); "
                         "use 'cpu'")
    count = backend.device_count()
    if dev.index is not None and dev.index >= count:
        raise ValueError(f"{argument}: {text!r}: this machine has {count} {dev.type} device(s), numbered from 0")
    return dev


def scale_of_amax(amax, qmax):
    """amax / qmax, elementwise; 1 where amax is 0 (an all-zero tensor or channel: never 0/0)."""
    return torch.where(amax > 0, amax / qmax, torch.ones_like(amax))


def dynamic_scale(x, qmax):
    """max |x| / qmax as a 0-d fp32 tensor on x's device: no host synchronisation."""
    return scale_of_amax(x.detach().abs().amax().float(), qmax)


def _out_dtype(x_dtype):
    return x_dtype if x_dtype in (torch.float32, torch.bfloat16, torch.float16) else torch.float32


def _scaled_mm(x8, w8, sx, sw, bias, out_dtype):
    rows = sx.reshape(1, 1).expand(x8.shape[0], 1).contiguous()  # rowwise scaling wants (M, 1), contiguous
    b = None if bias is None else bias.to(out_dtype)
    return torch._scaled_mm(x8, w8.t(), scale_a=rows, scale_b=sw.reshape(1, -1), bias=b, out_dtype=out_dtype)


def _int_mm(x8, w8, sx, sw, bias):
    m = x8.shape[0]
    if x8.is_cuda and m <= 16:  # cuBLASLt's int8 product wants more than 16 rows: pad with zeros
        x8 = F.pad(x8, (0, 0, 0, 32 - m))
    acc = torch._int_mm(x8, w8.t())[:m]
    scale = sx * sw
    return acc * scale if bias is None else torch.addcmul(bias, acc, scale)


_trials = {}  # (dtype, device, out dtype) -> None (runs) or the reason it does not
_warned = set()


def _trial(dtype, device, out_dtype):
    """Why `dtype`'s real product cannot run on `device` with `out_dtype` (None: it runs), from the
    device's capability and one small call, remembered per process."""
    key = (dtype, str(device), out_dtype)
    if key in _trials:
        return _trials[key]
    reason = None
    if device.type == "cuda" and dtype != torch.int8 and torch.cuda.get_device_capability(device) < (8, 9):
        major, minor = torch.cuda.get_device_capability(device)
        reason = f"FP8 products need compute capability 8.9 or newer; {torch.cuda.get_device_name(device)} has {major}.{minor}"
    elif device.type not in ("cpu", "cuda"):
        reason = f"no 8-bit product on {device.type}"
    else:
        try:
            x8 = torch.ones(32, 32, device=device).to(dtype)
            one = torch.ones(32, device=device)
            y = (_int_mm(x8, x8, one[0], one, None) if dtype == torch.int8
                 else _scaled_mm(x8, x8, one[0], one, one, out_dtype))
            if not bool((y == (32 if dtype == torch.int8 else 33)).all()):
                reason = "a trial product gave a wrong result"
        except (RuntimeError, ValueError, NotImplementedError) as e:
            reason = first_line(e)
    _trials[key] = reason
    return reason


@torch.compiler.assume_constant_result
def _path(dtype_name, device_str, x_dtype_name, in_features, out_features):
    dtype, device = getattr(torch, dtype_name), torch.device(device_str)
    if device.type == "cuda":
        multiple = 8 if dtype == torch.int8 else 16
        if in_features % multiple or out_features % multiple:
            return EMULATED, torch.float32
    if dtype == torch.int8:
        out, reason = torch.float32, _trial(dtype, device, None)  # int32 sums, scaled in fp32
    else:
        out = _out_dtype(getattr(torch, x_dtype_name))
        reason = _trial(dtype, device, out)
        # Older cuBLAS / CUTLASS kernels take rowwise scales with a bf16 output only.
        if reason is not None and device.type == "cuda" and _trial(dtype, device, torch.bfloat16) is None:
            return _REAL[dtype], torch.bfloat16
    if reason is None:
        return _REAL[dtype], out
    key = (dtype, str(device))
    if key not in _warned:
        _warned.add(key)
        warnings.warn(f"vitfast.quant: {dtype} products cannot run on {device} ({reason}); Linear8 layers there run "
                      "the emulation (same rounding, fp32 products)", stacklevel=4)
    return EMULATED, torch.float32


class CodeBuffers(nn.Module):
    """A module whose state is buffers (no parameters) of exact dtypes (8-bit codes, fp32 scales, biases):
    model.to(device) moves them, but model.half() / .to(torch.bfloat16) must not recast them, so each
    keeps its dtype and follows fn's device. Its children (if any) get fn as usual."""

    def _apply(self, fn, recurse=True):
        if recurse:
            for child in self.children():
                child._apply(fn)
        for key, buf in self._buffers.items():
            if buf is not None:  # fn asked on an empty tensor first: a recast copy is never made to be thrown away
                probe = fn(buf.new_empty(0))
                self._buffers[key] = fn(buf) if probe.dtype == buf.dtype else buf.to(probe.device)
        return self


class Linear8(CodeBuffers):
    """nn.Linear with 8-bit weights and a real 8-bit product (see the module docstring); for inference
    only (its buffers take no gradient)."""

    def __init__(self, in_features, out_features, bias=True, dtype=torch.float8_e4m3fn, static=True, device=None):
        super().__init__()
        if dtype not in CAST8_DTYPES:
            raise TypeError(f"dtype must be one of {', '.join(map(str, CAST8_DTYPES))}, got {dtype}")
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("weight", torch.zeros(out_features, in_features, dtype=dtype, device=device))
        self.register_buffer("weight_scale", torch.ones(out_features, device=device))
        self.register_buffer("input_scale", torch.ones((), device=device) if static else None)
        self.register_buffer("bias", torch.zeros(out_features, device=device) if bias else None)
        self._routes = {}  # (weight dtype, device, input dtype) -> _path's answer, for eager forwards

    @classmethod
    def from_weights(cls, weight, weight_scale, bias, dtype, input_scale=None):
        """A Linear8 from an fp32 `weight` (out, in) and its per-channel `weight_scale` (out,): the
        weight stored as scaled_cast(weight, weight_scale, dtype)."""
        layer = cls(weight.shape[1], weight.shape[0], bias is not None, dtype, input_scale is not None,
                    device=weight.device)
        with torch.no_grad():
            layer.weight.copy_(scaled_cast(weight.detach().float(), weight_scale.float().reshape(-1), dtype))
            layer.weight_scale.copy_(weight_scale.reshape(-1))
            if bias is not None:
                layer.bias.copy_(bias.detach())
            if input_scale is not None:
                layer.input_scale.copy_(input_scale)
        return layer

    def path(self, device=None, dtype=torch.float32):
        """What runs for an input of `dtype` on `device` (default: the weight's): "fp8 torch._scaled_mm",
        "int8 torch._int_mm" or "emulated"."""
        return self._route(self.weight.device if device is None else usable_device(device), dtype)[0]

    def _route(self, device, dtype):
        """(path, out dtype) for an input of `dtype` on `device` (_path takes names: compile constants)."""
        return _path(str(self.weight.dtype).removeprefix("torch."), str(torch.device(device)),
                     str(dtype).removeprefix("torch."), self.in_features, self.out_features)

    @property
    def qmax(self):
        """The largest magnitude of the weight's format: what a scale's amax maps to."""
        return CAST8_DTYPES[self.weight.dtype][0]

    def _forward_route(self, x):
        # _route builds three names per call (~5 us on the CPU, per layer); an eager forward looks its
        # answer up instead. Under torch.compile _route is traced once, as a constant.
        if torch.compiler.is_compiling():
            return self._route(x.device, x.dtype)
        key = (self.weight.dtype, x.device, x.dtype)
        route = self._routes.get(key)
        if route is None:
            route = self._routes[key] = self._route(x.device, x.dtype)
        return route

    def forward(self, x):
        shape = x.shape
        x2 = x.reshape(-1, self.in_features)
        sx = self.input_scale if self.input_scale is not None else dynamic_scale(x2, self.qmax)
        x8 = scaled_cast(x2, sx, self.weight.dtype)
        path, out_dtype = self._forward_route(x)
        if path == EMULATED:
            w = self.weight.float() * self.weight_scale[:, None]
            bias = None if self.bias is None else self.bias.to(x.dtype)
            y = F.linear((x8.float() * sx).to(x.dtype), w.to(x.dtype), bias)
        elif self.weight.dtype == torch.int8:
            y = _int_mm(x8, self.weight, sx, self.weight_scale, self.bias)
        else:
            y = _scaled_mm(x8, self.weight, sx, self.weight_scale, self.bias, out_dtype)
        return y.to(x.dtype).reshape(*shape[:-1], self.out_features)

    def to_linear(self):
        """An nn.Linear with the dequantized weight (codes x scales, fp32): what strip_qat leaves."""
        layer = nn.Linear(self.in_features, self.out_features, self.bias is not None, device=self.weight.device)
        with torch.no_grad():
            layer.weight.copy_(self.weight.float() * self.weight_scale[:, None])
            if self.bias is not None:
                layer.bias.copy_(self.bias)
        return layer.requires_grad_(False)

    def extra_repr(self):
        scaling = "static" if self.input_scale is not None else "dynamic"
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"dtype={str(self.weight.dtype).removeprefix('torch.')}, activation scale {scaling}")


def quantized_paths(model, device=None, dtype=torch.float32):
    """{path: number of Linear8 layers} for an input of `dtype` on `device` (default: each layer's own)."""
    if device is not None:
        device = usable_device(device)  # refused even for a model without Linear8 layers
    counts = {}
    for m in model.modules():
        if isinstance(m, Linear8):
            p = m.path(device, dtype)
            counts[p] = counts.get(p, 0) + 1
    return counts
