"""FP8 inference that stays in FP8 between layers: convert_fp8 turns each plain pre-norm transformer
block of a trained model into an FP8Block, whose products read e4m3 codes written by the op before them:

    x (bf16) ─ layer_norm_fp8 ─> e4m3 ─ qkv fp8_linear ─> bf16 q, k, v ─ attention (bf16) ─ scaled_cast ─> e4m3
      ─ proj fp8_linear + residual ─> x (bf16) ─ layer_norm_fp8 ─> e4m3 ─ fc1 fp8_linear + GELU ─> e4m3
      ─ fc2 fp8_linear + residual ─> x (bf16)

so no product casts its own input: the scale of each e4m3 tensor is static, calibrated once as a power
of two, 2^ceil(log2(amax / 448)) over the calibration batches (a power of two makes the kernels'
multiply by its inverse the exact division scaled_cast rounds), and the e4m3 writer applies it
(LayerNorm, fc1's epilogue, the cast after attention). Weights: e4m3 with one fp32 scale per output
feature (amax of the row / 448); biases fp32. The patch embedding, the class token, the final norm and
the head run in bf16; the residual stream is bf16.

Where it runs: fp8_linear's Hopper kernels and layer_norm_fp8's CUDA kernel on an H100/H200 (compute
capability 9.0); elsewhere (the CPU, other GPUs) each op runs its ATen composite, the same rounding at
every step (vitfast.ops' twins), and warns once on a GPU. Inference only.
"""
import copy
import math
import warnings

import torch
from torch import nn

from ..layers.attention import Attention, attention_core
from ..layers.backend import resolve, use_backend
from ..layers.block import Block
from ..kernels.dispatch import kernel_config
from ..layers.mlp import Mlp
from ..ops import fp8_linear, layer_norm_fp8, scaled_cast
from ..ops.scaled_cast import CAST8_DTYPES
from .linear8 import CodeBuffers, scale_of_amax
from .scaled import check_calib_steps, replace_module, run_calibration

__all__ = ["FP8Block", "FP8Product", "chain_path", "convert_fp8", "convertible_blocks", "install_fp8_blocks",
           "power_of_two_scale"]

E4M3 = torch.float8_e4m3fn
QMAX = CAST8_DTYPES[E4M3][0]  # 448
_warned = set()


def power_of_two_scale(amax):
    """2^ceil(log2(amax / 448)) as a 1-value fp32 tensor: the smallest power of two that maps amax
    into e4m3's range; 1 for amax 0."""
    amax = float(amax)
    return torch.tensor([2.0 ** math.ceil(math.log2(amax / QMAX)) if amax > 0 else 1.0])


class FP8Product(CodeBuffers):
    """One e4m3 matrix product: the weight's codes and per-feature scales, an fp32 bias, and the static
    scale of its input's codes (buffers only: nothing here trains)."""

    def __init__(self, linear, input_scale):
        super().__init__()
        w = linear.weight.detach().float()
        scale = scale_of_amax(w.abs().amax(dim=1), QMAX)
        self.register_buffer("weight", scaled_cast(w, scale, E4M3))
        self.register_buffer("weight_scale", scale)
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().float().clone())
        self.register_buffer("input_scale", input_scale.float().reshape(1).to(w.device))

    def forward(self, x8, epilogue, **kw):
        """epilogue "none", "gelu_e4m3" or "residual": what the dispatch data's configuration is keyed by."""
        N, K = self.weight.shape  # kernel_config's answers are cached per (op, GPU, shape) in dispatch
        config = kernel_config("fp8_linear", x8, K=K, N=N, epilogue=epilogue) or "auto"
        return fp8_linear(x8, self.weight, self.input_scale, self.weight_scale, self.bias, config=config, **kw)

    def extra_repr(self):
        return f"in_features={self.weight.shape[1]}, out_features={self.weight.shape[0]}, e4m3"


class FP8Block(CodeBuffers):
    """A pre-norm transformer block (vitfast.layers.Block without LayerScale, drop path, qk-norm or an
    attention bias) as the module docstring's chain."""

    def __init__(self, block, scales):
        super().__init__()
        attn, mlp = block.attn, block.mlp
        self.num_heads, self.head_dim, self.attn_scale = attn.num_heads, attn.head_dim, attn.scale
        self.backend = attn.backend
        self.eps1, self.eps2 = block.norm1.eps, block.norm2.eps
        for name, norm in (("norm1", block.norm1), ("norm2", block.norm2)):
            self.register_buffer(f"{name}_weight", norm.weight.detach().float().clone())
            self.register_buffer(f"{name}_bias", norm.bias.detach().float().clone())
        self.qkv = FP8Product(attn.qkv, scales["qkv"])
        self.proj = FP8Product(attn.proj, scales["proj"])
        self.fc1 = FP8Product(mlp.fc1, scales["fc1"])
        self.fc2 = FP8Product(mlp.fc2, scales["fc2"])
        self.gelu = "gelu_tanh" if mlp.act.approximate == "tanh" else "gelu"

    def forward(self, x, attn_bias=None, return_attn=None):
        if attn_bias is not None or return_attn is not None:
            raise ValueError("FP8Block takes no attention bias and returns no attention maps")
        if x.device.type == "cpu" and "cpu" not in _warned:  # a GPU's composites warn in the ops themselves
            _warned.add("cpu")
            warnings.warn("vitfast.quant: the FP8 chain runs its ATen composites on the CPU (the emulation: the "
                          "kernels' rounding, fp32 products)", stacklevel=2)
        B, N, C = x.shape
        x = x.to(torch.bfloat16)
        h8 = layer_norm_fp8(x, self.norm1_weight, self.norm1_bias, self.qkv.input_scale, self.eps1)
        qkv = self.qkv(h8, "none").reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        o, _ = attention_core(q, k, v, self.attn_scale, backend=resolve(self.backend))
        o8 = scaled_cast(o.transpose(1, 2).reshape(B, N, C), self.proj.input_scale, E4M3)
        x = self.proj(o8, "residual", residual=x)
        h8 = layer_norm_fp8(x, self.norm2_weight, self.norm2_bias, self.fc1.input_scale, self.eps2)
        g8 = self.fc1(h8, "gelu_e4m3", activation=self.gelu, out_dtype=E4M3, out_scale=self.fc2.input_scale)
        return self.fc2(g8, "residual", residual=x)


def _plain_block(block):
    """Why `block` cannot become an FP8Block, or None."""
    if type(block) is not Block:
        return f"a {type(block).__name__}, not vitfast.layers.Block"
    attn, mlp = block.attn, block.mlp
    checks = [
        (type(attn) is Attention and isinstance(attn.q_norm, nn.Identity) and isinstance(attn.norm, nn.Identity),
         "its attention is not the plain Attention (qk-norm or a norm before the projection)"),
        (type(mlp) is Mlp and type(mlp.act) is nn.GELU and isinstance(mlp.norm, nn.Identity),
         "its MLP is not Linear-GELU-Linear"),
        (isinstance(block.ls1, nn.Identity) and isinstance(block.ls2, nn.Identity), "it has LayerScale"),
        (all(isinstance(n, nn.LayerNorm) and n.weight is not None and n.bias is not None
             for n in (block.norm1, block.norm2)), "its norms are not LayerNorms with a weight and a bias"),
        (block.act_quant is None and attn.act_quant is None and mlp.act_quant is None, "it holds QAT quantizers"),
    ]
    for ok, why in checks:
        if not ok:
            return why
    return None


def convertible_blocks(model):
    """([(name, block)] that convert_fp8 turns into FP8Blocks, {name: why not} for the other blocks)."""
    blocks, reasons = [], {}
    for name, module in model.named_modules():
        if isinstance(module, Block) or type(module).__name__.endswith("Block"):
            why = _plain_block(module)
            if why:
                reasons[name] = why
            else:
                blocks.append((name, module))
    return blocks, reasons


def chain_path(device):
    """What runs convert_fp8's chain on `device`: "Hopper FP8 kernels" on compute capability 9.0 with the
    sm90 kernels built, else "ATen composites (emulation)"; None on 8.9, where Linear8's
    torch._scaled_mm multiplies in FP8 for real and the chain would only emulate."""
    device = torch.device(device)
    if device.type != "cuda":
        return "ATen composites (emulation)"
    cc = torch.cuda.get_device_capability(device)
    if cc == (9, 0) and torch.ops.vitfast.sm90_kernels_built():
        return "Hopper FP8 kernels"
    return None if cc == (8, 9) else "ATen composites (emulation)"


@torch.no_grad()
def _calibrate(model, blocks, calib_data, calib_steps):
    """amax of each FP8 tensor (norm1's and norm2's outputs, the projection's and fc2's inputs) per block,
    from the float model run eagerly (eval mode) on the calibration batches."""
    amax = {id(b): dict(qkv=0.0, proj=0.0, fc1=0.0, fc2=0.0) for b in blocks}
    hooks = []

    def record(block, key, use_input):
        def hook(module, args, output=None):
            t = args[0] if use_input else output
            amax[id(block)][key] = max(amax[id(block)][key], float(t.detach().abs().amax()))
        return hook

    for b in blocks:
        hooks += [b.norm1.register_forward_hook(record(b, "qkv", False)),
                  b.attn.proj.register_forward_pre_hook(record(b, "proj", True)),
                  b.norm2.register_forward_hook(record(b, "fc1", False)),
                  b.mlp.fc2.register_forward_pre_hook(record(b, "fc2", True))]
    try:
        with use_backend("eager"):  # the modules' own forwards, so the hooks see every tensor
            used = run_calibration(model, calib_data, calib_steps)
    finally:
        for h in hooks:
            h.remove()
    if used == 0:
        raise ValueError("calib_data yielded no batches: convert_fp8's static scales need at least one")
    for b in blocks:
        bad = [k for k, v in amax[id(b)].items() if not math.isfinite(v)]
        if bad:
            raise ValueError(f"calib_data: the model's activations overflowed to inf or NaN ({', '.join(bad)} inputs)")
    return amax


def convert_fp8(model, calib_data, calib_steps=None):
    """A copy of `model` (left untouched) for FP8 inference: every plain pre-norm Block becomes an
    FP8Block (the module docstring's chain) with static power-of-two scales calibrated on up to
    `calib_steps` batches of `calib_data` (input tensors or (input, target) pairs; all of it when None),
    the rest of the model in bf16. Raises ValueError when there is nothing to calibrate with, calib_data
    holds inf or NaN, or no block can be converted (naming why)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if calib_data is None:
        raise ValueError("calib_data is required: convert_fp8 calibrates static FP8 scales on it")
    check_calib_steps(calib_steps)
    fp8 = copy.deepcopy(model).eval().requires_grad_(False)
    blocks, reasons = convertible_blocks(fp8)
    if not blocks:
        detail = "; ".join(f"{n}: {w}" for n, w in list(reasons.items())[:3]) or "it has no transformer blocks"
        raise ValueError(f"model: convert_fp8 found no plain pre-norm Block to convert ({detail})")
    amax = _calibrate(fp8.float(), [b for _, b in blocks], calib_data, calib_steps)
    scales = {name: {k: power_of_two_scale(v) for k, v in amax[id(b)].items()} for name, b in blocks}
    return install_fp8_blocks(fp8, {name: FP8Block(b, scales[name]) for name, b in blocks})


def install_fp8_blocks(model, fp8_blocks):
    """`model` (in place) in bf16 with `fp8_blocks` (name -> FP8Block) in place of its blocks, its float
    inputs cast on entry; what convert_fp8 returns and load_quantized rebuilds."""
    model.to(torch.bfloat16)  # the patch embedding, tokens, final norm and head; then the FP8 blocks go in
    for name, new in fp8_blocks.items():
        replace_module(model, name, new)  # a ModuleList's "3" too: its items are attributes named so
    model.register_forward_pre_hook(_inputs_to_bf16)
    model.fp8_blocks = list(fp8_blocks)
    return model


def _inputs_to_bf16(module, args):
    """The converted model is bf16 outside its FP8 blocks: float inputs (fp32 images) are cast on entry."""
    return tuple(a.to(torch.bfloat16) if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args)
