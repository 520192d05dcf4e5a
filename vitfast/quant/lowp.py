"""Low-precision inference at hardware speed: every nn.Linear through vitfast.ops.lp_matmul (on a GPU,
cuBLAS's fp16 product with the same accumulator wherever the GPU kind's dispatch data does not show
lp_matmul faster: vitfast.kernels.dispatch).

    route_lowp(model, "FP16_16")   fp16 operands, a real fp16 accumulator (HMMA.16816.F16), fp16 outputs
    route_lowp(model, "FP16_32")   fp16 operands, fp32 accumulation and outputs

Each nn.Linear's class is swapped in place (same Parameters, same state-dict keys) for LowpLinear,
whose forward rounds its input, weight and bias to fp16 and calls lp_matmul with the bias in the
epilogue; the result (fp16-valued for FP16_16) is returned in the wider of fp16 and the input's dtype,
so the rest of the model runs unchanged. Layers with in_features % 8 != 0 keep nn.Linear's forward.
On the CPU lp_matmul is an exact but slow emulation (see its docstring).

convert_ptq(model, "FP16_16" | "FP16_32") calls route_lowp(..., on="cuda", qat_only=True): on a GPU
their products then run on lp_matmul (the operand rounding is the same as the emulation's, fp16
nearest-even; the accumulation is real: FP16_16 accumulates in fp16 instead of rounding an fp32 result
once), while on the CPU they keep the emulation bit for bit (convert_ptq == prepare_qat in eval mode),
which the CPU emulation of an fp16 accumulator would not preserve.
"""
import torch
import torch.nn.functional as F
from torch import nn

from ..kernels.dispatch import use_kernel
from ..ops.lp_matmul import lp_linear
from .qat import QATLinear
from .recipes import parse_recipe

__all__ = ["route_lowp", "unroute_lowp", "LowpLinear", "LowpQATLinear", "lowp_linear", "LOWP_RECIPES"]

LOWP_RECIPES = {"FP16_16": "fp16", "FP16_32": "fp32"}


def lowp_linear(x, weight, bias, accumulate):
    """F.linear on lp_matmul: out_dtype fp16 (accumulate="fp16") or fp32, then the wider of it and x's dtype.
    On a GPU, cuBLAS's product of the same kind runs instead wherever this GPU kind's dispatch data does
    not show lp_matmul faster at the shape (vitfast.kernels.dispatch; no data: cuBLAS)."""
    if x.is_cuda and not use_kernel("lp_matmul", x, "float16", K=weight.shape[1], N=weight.shape[0],
                                    accumulate=accumulate):
        y = cublas_lowp_linear(x, weight, bias, accumulate)
    else:
        y = lp_linear(x, weight, bias, "bias" if bias is not None else None, accumulate,
                      torch.float16 if accumulate == "fp16" else torch.float32)
    return y.to(torch.promote_types(y.dtype, x.dtype))


def cublas_lowp_linear(x, weight, bias, accumulate):
    """The library path of lowp_linear, same operands and accumulator: fp16 x, weight and bias; an fp16
    accumulator and output (cuBLAS with allow_fp16_accumulation, for the call only) or fp32 accumulation
    into an fp32 output (torch.mm's out_dtype)."""
    x16, w16 = x.detach().half(), weight.detach().half()
    b16 = None if bias is None else bias.detach().half()
    if accumulate == "fp32":
        y = torch.mm(x16.reshape(-1, x16.shape[-1]), w16.t(), out_dtype=torch.float32)
        y = y.reshape(*x.shape[:-1], w16.shape[0])
        return y if b16 is None else y + b16.float()
    flags = torch.backends.cuda.matmul
    old = flags.allow_fp16_accumulation
    flags.allow_fp16_accumulation = True
    try:
        return F.linear(x16, w16, b16)
    finally:
        flags.allow_fp16_accumulation = old


def _applies(module, x, on):
    return module.in_features % 8 == 0 and (on is None or x.device.type == on)


class LowpLinear(nn.Linear):
    """nn.Linear whose product runs on lp_matmul (set by route_lowp; `lowp_accumulate`, `lowp_on`)."""

    lowp_accumulate = "fp16"
    lowp_on = None

    def forward(self, x):
        if _applies(self, x, self.lowp_on):
            return lowp_linear(x, self.weight, self.bias, self.lowp_accumulate)
        return super().forward(x)


class LowpQATLinear(QATLinear):
    """convert_ptq's QATLinear with its product on lp_matmul where `lowp_on` matches the input's device.
    Its parameters are stored rounded to fp16 and its input rounding is fp16's, so lp_matmul sees the
    same operands as the emulation; the FP16_16/FP16_32 output rounding is exact on lp_matmul's result."""

    lowp_accumulate = "fp16"
    lowp_on = "cuda"

    def forward(self, input):
        if _applies(self, input, self.lowp_on):
            return lowp_linear(input, self.weight, self.bias, self.lowp_accumulate)
        return super().forward(input)


def route_lowp(model, recipe, on=None, qat_only=False):
    """Route every nn.Linear of `model` (in place; returns it) through lp_matmul for recipe "FP16_16"
    or "FP16_32"; on="cuda" only when the input is on that device type (None: everywhere). QAT /
    convert_ptq layers (QATLinear) become LowpQATLinear; qat_only: only those (convert_ptq's layers
    left in fp32 by `exclude` stay as they are). Other recipes leave the model untouched."""
    recipe = parse_recipe(recipe, "recipe")
    accumulate = LOWP_RECIPES.get(recipe.name)
    if accumulate is None:
        return model
    for module in model.modules():
        cls = type(module)
        if cls in (nn.Linear, LowpLinear) and not qat_only:
            module.__class__ = LowpLinear
        elif cls in (QATLinear, LowpQATLinear):
            module.__class__ = LowpQATLinear
        else:
            continue
        module.lowp_accumulate, module.lowp_on = accumulate, on
    return model


def unroute_lowp(model):
    """Undo route_lowp in place."""
    for module in model.modules():
        if type(module) is LowpLinear:
            module.__class__ = nn.Linear
        elif type(module) is LowpQATLinear:
            module.__class__ = QATLinear
        else:
            continue
        del module.lowp_accumulate, module.lowp_on
    return model
