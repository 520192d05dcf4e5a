"""Scaled 8-bit recipes: INT8 and FP8 matrix products with per-channel weight scales and per-tensor
activation scales, the scheme of torchao / TransformerEngine / ModelOpt post-training quantization.

An 8-bit format alone covers a fixed range (int8: integers up to 127; e4m3: up to 448), so each tensor
is divided by a scale first, rounded, and multiplied back (fake quantization, computed in fp32):

    weights      one scale per output channel: amax over the channel / qmax (stored rounded by PTQ)
    activations  one scale per layer input: amax / qmax, where amax is either
                 - static:  the largest |x| seen while calibrating on a few batches (calibrate_scaled,
                            or convert_ptq(..., calib_data=, calib_steps=)), fixed afterwards, or
                 - dynamic: the current batch's largest |x| (no calibration; a reduction per call)
    biases       left in fp32: 8-bit GEMM kernels add them in the wide accumulator's epilogue

Only the matrix products are quantized (the inputs and weights of nn.Linear and nn.Conv*): LayerNorm,
softmax, GELU and the residual stream stay fp32, as in FP8 inference engines. Here (prepare_qat, and
convert_ptq(..., emulate=True)) products are computed in fp32 from the dequantized operands, which
equals an int32 / fp32 accumulator up to fp32's rounding of the sum; convert_ptq by default runs them
for real on 8-bit codes (vitfast.quant.linear8.Linear8). An all-zero tensor (or channel) gets scale 1,
never 0/0.

    name             element format              qmax
    INT8             fixed(wl=8, fl=0), symmetric  127   (integers -127..127, ties to even)
    FP8_E4M3_SCALED  e4m3fn, saturating            448
    FP8_E5M2_SCALED  e5m2, saturating            57344
"""
import warnings
from dataclasses import dataclass

import torch

from .. import progress
from ..ops.scaled_cast import CAST8_DTYPES
from .functional import quantize
from .linear8 import Linear8, scale_of_amax
from .number import FixedPoint, FloatingPoint

__all__ = ["ScaledRecipe", "SCALED_RECIPES", "ScaledRounding", "calibrate_scaled", "scaled_roundings", "to_linear8"]


@dataclass(frozen=True)
class ScaledRecipe:
    """An 8-bit recipe with scales: `element` is the format x / scale is rounded to, `dtype` the torch
    dtype its codes are stored in (Linear8's weights, scaled_cast's output)."""

    name: str
    element: object
    dtype: torch.dtype

    is_fp32 = False
    is_scaled = True
    operand_bits = 8

    def __str__(self):
        return self.name

    @property
    def qmax(self):
        """The element format's largest magnitude: the value amax maps to."""
        return CAST8_DTYPES[self.dtype][0]


SCALED_RECIPES = {
    "INT8": ScaledRecipe("INT8", FixedPoint(8, 0, clamp=True, symmetric=True), torch.int8),
    "FP8_E4M3_SCALED": ScaledRecipe("FP8_E4M3_SCALED", FloatingPoint(4, 3, saturate=True, finite=True),
                                    torch.float8_e4m3fn),
    "FP8_E5M2_SCALED": ScaledRecipe("FP8_E5M2_SCALED", FloatingPoint(5, 2, saturate=True), torch.float8_e5m2),
}

MODES = ("dynamic", "observe", "static")


class ScaledRounding:
    """x -> round(x / s) * s into `recipe`'s element format, the gradient straight through (s is
    constant). per_channel=True: one s per slice along dim 0 (weights; 1-D tensors, the biases, pass
    through unchanged); otherwise one s for the tensor, following `mode`:
    "dynamic" (s from this x), "observe" (x passes through unchanged, amax accumulates) or "static"
    (s from the observed amax)."""

    def __init__(self, recipe, per_channel=False, mode="dynamic", rounding="nearest"):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.recipe, self.per_channel, self.mode, self.rounding = recipe, per_channel, mode, rounding
        self.amax = None  # the observed max |x| (a 0-d fp32 tensor) once calibration has run

    def scale_of(self, x):
        a = x.detach().abs().float()
        if self.per_channel:
            amax = a.reshape(a.shape[0], -1).amax(dim=1).reshape(-1, *([1] * (x.dim() - 1)))
        elif self.mode == "static":
            amax = self.amax.to(x.device)
        else:
            amax = a.amax()
        return scale_of_amax(amax, self.recipe.qmax)

    def __call__(self, x):
        if x is None or (self.per_channel and x.dim() < 2):
            return x
        if self.mode == "observe" and not self.per_channel:
            amax = x.detach().abs().amax().float().cpu()
            if not torch.isfinite(amax):
                raise ValueError("calib_data: a calibration batch gives a layer an inf or NaN input: static "
                                 "scales need finite activations")
            self.amax = amax if self.amax is None else torch.maximum(self.amax, amax)
            return x
        s = self.scale_of(x)
        # The division in fp32 (a 0-d scale would leave it in x's dtype): scaled_cast's rounding.
        return (quantize(x.float() / s, self.recipe.element, self.rounding) * s).to(x.dtype)

    def freeze(self):
        """End calibration: "static" with the observed amax (or "dynamic", with a warning, if nothing
        nonzero was seen: a static scale cannot be chosen)."""
        if self.amax is None or not self.amax > 0:
            warnings.warn("scaled quantization: a layer saw no nonzero input during calibration; it keeps "
                          "dynamic scaling", stacklevel=3)
            self.mode = "dynamic"
        else:
            self.mode = "static"

    def __repr__(self):
        if self.per_channel:
            return f"{self.recipe.name} per-channel"
        amax = f", amax={self.amax.item():.4g}" if self.mode == "static" else ""
        return f"{self.recipe.name} per-tensor {self.mode}{amax}"


def scaled_roundings(recipe, rounding="nearest"):
    """(input rounding, weight rounding) for one layer: a fresh per-tensor rounding of its input
    ("dynamic" until calibrate_scaled observes batches) and a per-channel rounding of its weight."""
    return ScaledRounding(recipe, False, "dynamic", rounding), ScaledRounding(recipe, True, rounding=rounding)


def _input_roundings(model):
    found = []
    for module in model.modules():
        r = getattr(getattr(module, "qat", None), "input", None)
        if isinstance(r, ScaledRounding):
            found.append(r)
    return found


@torch.no_grad()
def calibrate_scaled(model, calib_data, calib_steps=None):
    """Static activation scales for a model quantized with a scaled recipe: run it (eval mode) on up to
    `calib_steps` batches of `calib_data` (an iterable of input tensors or (input, target) pairs; all of
    it when calib_steps is None), record each layer input's largest |x|, then fix the scales. Returns
    the number of batches used."""
    roundings = _input_roundings(model)
    if not roundings:
        raise ValueError("model: calibrate_scaled needs a model quantized with a scaled recipe "
                         f"({', '.join(SCALED_RECIPES)})")
    check_calib_steps(calib_steps)
    for r in roundings:
        r.mode, r.amax = "observe", None
    was_training = model.training
    model.eval()
    try:
        used = run_calibration(model, calib_data, calib_steps)
    finally:
        model.train(was_training)
    if used == 0:
        for r in roundings:
            r.mode = "dynamic"
        raise ValueError("calib_data yielded no batches: static scales need at least one")
    for r in roundings:
        r.freeze()
    return used


def check_calib_steps(calib_steps):
    """calib_steps as the calibrating functions take it: a positive integer, or None (all batches)."""
    if calib_steps is not None and (not isinstance(calib_steps, int) or isinstance(calib_steps, bool)
                                    or calib_steps < 1):
        raise ValueError(f"calib_steps must be a positive integer or None, got {calib_steps!r}")


def run_calibration(model, calib_data, calib_steps=None):
    """model (as it is: the caller sets eval mode and what observes) run on calibration_inputs, each
    moved to the model's device, under a progress bar drawn on a terminal only. Returns the number of
    batches run."""
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    total = len(calib_data) if hasattr(calib_data, "__len__") else None
    if calib_steps is not None:
        total = calib_steps if total is None else min(total, calib_steps)
    bar = progress.bar(total=total, desc="calibration", unit="batch")
    used = 0
    try:
        for x in calibration_inputs(calib_data, calib_steps):
            model(x.to(device))
            used += 1
            bar.update()
    finally:
        bar.close()
    return used


def calibration_inputs(calib_data, calib_steps=None):
    """The input tensors of the first `calib_steps` batches of calib_data (all when None): tensors or
    (input, target) pairs, checked finite (static scales from inf or NaN would be meaningless)."""
    for used, batch in enumerate(calib_data):
        if calib_steps is not None and used >= calib_steps:
            return
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"calib_data must yield tensors or (tensor, target) pairs, got {type(x).__name__}")
        if x.is_floating_point() and not bool(torch.isfinite(x).all()):
            raise ValueError(f"calib_data: batch {used} holds inf or NaN; static scales need finite inputs")
        yield x


def to_linear8(model, recipe, weight_scales):
    """Replace (in place) each QATLinear in `weight_scales` (layer -> its per-channel weight scales,
    taken from the unrounded weight) by a Linear8 holding its 8-bit codes; its activation scale is
    the input rounding's static one, or dynamic. Returns the model (the new layer, if it was one)."""
    for name, module in list(model.named_modules()):
        if module not in weight_scales:
            continue
        r = module.qat.input
        static = None if r.mode != "static" else scale_of_amax(r.amax, recipe.qmax).to(module.weight.device)
        layer = Linear8.from_weights(module.weight, weight_scales[module], module.bias, recipe.dtype, static)
        if not name:
            return layer
        replace_module(model, name, layer)
    return model


def replace_module(model, name, new):
    """Set the submodule called `name` (dotted) of `model` to `new`."""
    parent, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, attr, new)
