"""Post-training quantization (convert_ptq): a frozen copy of a model with its weights stored rounded
once and the activations rounded where prepare_qat rounds them; scaled recipes as 8-bit layers, FP16_16 /
FP16_32 on lp_matmul on GPUs. Built on the QAT layers of qat.py."""
import copy

import torch

from ..ops._quant_args import check_rounding
from .lowp import route_lowp
from .qat import QATLinear, QATModule, _check_model, _FunctionalQAT, _prepare, is_quantized, strip_qat
from .recipes import parse_recipe
from .scaled import calibrate_scaled, to_linear8

__all__ = ["convert_ptq"]


def _check_calibration(calib_data, calib_steps):
    if calib_steps is not None and (not isinstance(calib_steps, int) or isinstance(calib_steps, bool) or calib_steps < 0):
        raise ValueError(f"calib_steps must be a non-negative integer or None, got {calib_steps!r}")
    if calib_data is None and calib_steps:
        raise ValueError(f"calib_steps={calib_steps}: static activation scales need calib_data (batches to "
                         "calibrate on); pass calib_data, or calib_steps=0 / None for dynamic scales")
    if calib_data is not None and calib_steps == 0:
        raise ValueError("calib_steps=0 asks for dynamic activation scales, but calib_data was given: pass "
                         "calib_steps=None (all of it) or N > 0 to calibrate, or no calib_data")


@torch.no_grad()
def convert_ptq(model, recipe, rounding="nearest", *, exclude=(), calib_data=None, calib_steps=None, emulate=False):
    """Post-training quantization for evaluation: a deep copy of `model` (left untouched; a QAT model is
    stripped first) in eval mode, parameters frozen (requires_grad False), with the weights and biases
    of every rounded layer stored rounded to the recipe's operand format once (layers whose forward
    transforms their weights first, such as a weight-standardised conv, round the transformed weight at
    each call instead, as in QAT), and the same rounding
    points as prepare_qat(recipe) for the activations. Its output equals the eval-mode output of
    prepare_qat(copy, recipe) bit for bit, except FP16_16 / FP16_32 on a GPU, whose linear layers run on
    vitfast.ops.lp_matmul (a real fp16 / fp32 accumulator; see vitfast.quant.lowp). The FP32 recipe
    gives a plain frozen eval copy.

    Scaled recipes (INT8, FP8_E4M3_SCALED, FP8_E5M2_SCALED): weights with per-channel scales;
    activation scales static, calibrated on up to `calib_steps` batches of `calib_data` (inputs or
    (input, target) pairs, run through the copy in eval mode), or dynamic per batch when no calib_data
    is given (calib_steps None or 0). Every nn.Linear becomes a vitfast.quant.Linear8: 8-bit weights
    (no fp32 copy) and a real FP8 / INT8 product (torch._scaled_mm / torch._int_mm) where the device
    runs one, the emulation elsewhere (warned); emulate=True keeps the emulation everywhere (QAT layers
    with the weights stored rounded in fp32), and so does rounding other than "nearest". Convolutions
    (the patch embedding) keep the emulation. Other recipes need no calibration and ignore calib_data,
    calib_steps and emulate."""
    _check_model(model)
    recipe = parse_recipe(recipe, "recipe")
    check_rounding(rounding, "rounding")
    if recipe.is_scaled:
        _check_calibration(calib_data, calib_steps)
    ptq = copy.deepcopy(model)
    if is_quantized(ptq):
        ptq = strip_qat(ptq)
    ptq.eval().requires_grad_(False)
    if recipe.is_fp32:
        return ptq
    _prepare(ptq, recipe, None, rounding, rounding, exclude, prequantized=True)
    real = recipe.is_scaled and not emulate and rounding == "nearest"
    weight_scales = {}
    for module in ptq.modules():
        # Layers on the primitive-interception path (their forward transforms the parameters first, e.g. a
        # weight-standardised conv) keep their parameters: the rounding applies to what reaches the primitive.
        if isinstance(module, QATModule) and not isinstance(module, _FunctionalQAT):
            if real and type(module) is QATLinear:
                weight_scales[module] = module.qat.weight.scale_of(module.weight)
            for p in module._parameters.values():
                if p is not None and p.is_floating_point():
                    p.copy_(module.qat.weight(p))
    if recipe.is_scaled:
        if calib_data is not None:
            calibrate_scaled(ptq, calib_data, calib_steps)
        if real:
            ptq = to_linear8(ptq, recipe, weight_scales)
            ptq.qat_recipe = recipe
        return ptq
    route_lowp(ptq, recipe, on="cuda", qat_only=True)  # FP16_16 / FP16_32: lp_matmul on GPUs, see lowp
    return ptq
