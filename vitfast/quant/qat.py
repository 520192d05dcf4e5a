"""Quantization-aware training (prepare_qat) and post-training quantization (convert_ptq) as transforms
of the ordinary models: no separate model classes, the same parameters and state-dict keys.

Rounding points (formats from the recipe, see vitfast.quant.recipes; "operand" / "output"):

  ==========================================  =========  ================================================
  point                                       format     how
  ==========================================  =========  ================================================
  input, weight, bias of nn.Linear,           operand    the layer's class is swapped (in place) for a
  nn.Conv1d/2d/3d, nn.LayerNorm, nn.GroupNorm            quantizing subclass holding the SAME Parameters
  output of those layers                      output     (same class swap)
  GELU input and output (nn.GELU)             operand    (same class swap)
  Mlp.act_quant: the activation's output      operand    hook in vitfast.layers.Mlp
  Attention.act_quant: q, k, v, logits,       operand    hook in vitfast.layers.attention_core (forces
  softmax probabilities, attn·v                          the eager path)
  Block.act_quant: the two residual sums      output     hook in vitfast.layers.Block
  VisionTransformer.act_quant: embedded       output     hook in VisionTransformer._pos_embed
  tokens after the cls/pos concat and add
  ==========================================  =========  ================================================

The attention core is rounded to the operand format throughout: its products' outputs (logits, attn·v)
are read only as operands (by the softmax and by proj), so this equals output rounding followed by the
reader's input rounding. The residual stream and the embedding sum are running sums, hence the output
(accumulator) format: FP16_16 keeps them in fp16, FP16_32 / TF32 / FP8_* in fp32 (as myrtle-vision's
FP16_32 does), so a recipe's operand format never becomes the format of the residual stream unless its
output format is the same (FP16_16, BF16, custom specs).

Any module with an ``act_quant`` attribute (None) gets a hook: "operand" for vitfast.layers.Attention and
Mlp, "output" for vitfast.layers.Block, for modules whose class name ends in "Block" and for models (a
module with a ``blocks`` attribute); a class may say which with ``act_quant_role = "operand" | "output"``.

Accumulation: products are computed in fp32 and only their OUTPUT is rounded (myrtle-vision's approach):
FP16_16 QAT is not a per-add fp16 accumulator (see vitfast.quant.recipes).

Gradients are straight-through (identity) at every rounding point; with ``grad=`` they are rounded to
that format where they cross each point (the gradient wrt each layer's input, weight, bias, output and
each act_quant value). Parameters (master weights) stay fp32 and unquantized: weights are rounded on
the fly in every forward, so the optimizer updates the fp32 values.

Layers whose class overrides forward (e.g. a weight-standardised Conv2d, GroupNorm+act) are handled by
intercepting the F.linear / F.conv* / F.layer_norm / F.group_norm / F.gelu calls made inside their
forward, so the rounding applies to what actually enters the primitive (the standardised weight).

Save QAT models with state_dict() (identical keys; loads into the ordinary model, strict); whole-module
pickling works for the predefined QAT classes but not for subclasses created on the fly.
"""
import fnmatch
import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from ..layers import Attention, Block, Mlp
from ..ops._quant_args import check_rounding
from .functional import quantize
from .quantizer import _StraightThrough
from .recipes import FP32, format_name, parse_format, parse_recipe
from .linear8 import Linear8
from .scaled import replace_module, scaled_roundings

__all__ = ["prepare_qat", "strip_qat", "is_quantized", "model_size_bytes", "QATModule",
           "QATLinear", "QATConv1d", "QATConv2d", "QATConv3d", "QATLayerNorm", "QATGroupNorm", "QATGELU"]


class _Round:
    """x -> x rounded to `fmt` (None: left alone) in the forward pass, with a straight-through gradient
    rounded to `grad` (None: left alone). Picklable; used both inside the QAT layers and as act_quant."""

    def __init__(self, fmt=None, grad=None, rounding="nearest", grad_rounding="nearest"):
        self.fmt = None if fmt is None or fmt == FP32 else fmt
        self.grad = None if grad is None or grad == FP32 else grad
        self.rounding, self.grad_rounding = rounding, grad_rounding

    @property
    def identity(self):
        return self.fmt is None and self.grad is None

    def __call__(self, x):
        if x is None:
            return None
        if self.grad is not None and x.requires_grad and torch.is_grad_enabled():
            return _StraightThrough.apply(x, self.fmt, self.grad, self.rounding, self.grad_rounding)
        if self.fmt is None:
            return x
        return quantize(x, self.fmt, self.rounding)  # the operator's own gradient is straight-through

    def __repr__(self):
        bwd = "" if self.grad is None else f", grad {format_name(self.grad)}"
        return f"{format_name(self.fmt or FP32)}{bwd}"


class _LayerRounding:
    """The rounding of one layer kind: input, weight (and bias), output; `prequantized` (PTQ) skips the
    rounding of the layer's own parameters, which are stored rounded."""

    def __init__(self, input, weight, output, prequantized=False):
        self.input, self.weight, self.output, self.prequantized = input, weight, output, prequantized

    def __repr__(self):
        text = f"input={self.input}, weight={self.weight}, output={self.output}"
        return text + (", weights stored rounded" if self.prequantized else "")


class QATModule:
    """Base of the quantizing layers that prepare_qat swaps in (``module.__class__``); `qat` holds the
    rounding (a _LayerRounding) and `_qat_base` the original class, restored by strip_qat."""

    _qat_base = None

    def _round_param(self, t):
        r = self.qat
        if r.prequantized and t is not None and any(t is p for p in self._parameters.values()):
            return t
        return r.weight(t)

    def extra_repr(self):
        base = super().extra_repr()
        return f"{base}, qat=({self.qat})" if base else f"qat=({self.qat})"


class _LinearQAT(QATModule):
    def forward(self, input):
        r = self.qat
        return r.output(F.linear(r.input(input), self._round_param(self.weight), self._round_param(self.bias)))


class _ConvQAT(QATModule):
    # nn.Conv{1,2,3}d.forward calls self._conv_forward(input, self.weight, self.bias).
    def _conv_forward(self, input, weight, bias):
        r = self.qat
        return r.output(super()._conv_forward(r.input(input), self._round_param(weight), self._round_param(bias)))


class _LayerNormQAT(QATModule):
    def forward(self, input):
        r = self.qat
        return r.output(F.layer_norm(r.input(input), self.normalized_shape, self._round_param(self.weight),
                                     self._round_param(self.bias), self.eps))


class _GroupNormQAT(QATModule):
    def forward(self, input):
        r = self.qat
        return r.output(F.group_norm(r.input(input), self.num_groups, self._round_param(self.weight),
                                     self._round_param(self.bias), self.eps))


class _GELUQAT(QATModule):
    def forward(self, input):
        r = self.qat
        return r.output(F.gelu(r.input(input), approximate=self.approximate))


# The primitives intercepted inside layers that override forward: func -> (weight index, weight keyword,
# bias index, bias keyword); None: the primitive takes no such argument.
_PRIMITIVES = {
    F.linear: (1, "weight", 2, "bias"),
    F.conv1d: (1, "weight", 2, "bias"),
    F.conv2d: (1, "weight", 2, "bias"),
    F.conv3d: (1, "weight", 2, "bias"),
    F.layer_norm: (2, "weight", 3, "bias"),
    F.group_norm: (2, "weight", 3, "bias"),
    F.gelu: (None, None, None, None),
}


class _RoundPrimitives(TorchFunctionMode):
    def __init__(self, module):
        super().__init__()
        self.module = module

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        spec = _PRIMITIVES.get(func)
        if spec is None or not args:
            return func(*args, **kwargs)
        r, args = self.module.qat, list(args)
        args[0] = r.input(args[0])
        for index, key in (spec[:2], spec[2:]):
            if index is None:
                continue
            if len(args) > index:
                args[index] = self.module._round_param(args[index])
            elif kwargs.get(key) is not None:
                kwargs[key] = self.module._round_param(kwargs[key])
        return r.output(func(*args, **kwargs))


class _FunctionalQAT(QATModule):
    """For layers whose class overrides forward: rounds at the primitives their forward calls."""

    def forward(self, *args, **kwargs):
        with _RoundPrimitives(self):
            return super().forward(*args, **kwargs)


def _named(mixin, base):
    cls = type(f"QAT{base.__name__}", (mixin, base), {"_qat_base": base, "__module__": __name__})
    cls.__qualname__ = cls.__name__
    return cls


QATLinear = _named(_LinearQAT, nn.Linear)
QATConv1d = _named(_ConvQAT, nn.Conv1d)
QATConv2d = _named(_ConvQAT, nn.Conv2d)
QATConv3d = _named(_ConvQAT, nn.Conv3d)
QATLayerNorm = _named(_LayerNormQAT, nn.LayerNorm)
QATGroupNorm = _named(_GroupNormQAT, nn.GroupNorm)
QATGELU = _named(_GELUQAT, nn.GELU)

# base class, mixin for subclasses keeping the base's forward, predefined QAT class, kind.
_KINDS = (
    (nn.Linear, _LinearQAT, QATLinear, "layer"),
    (nn.Conv1d, _ConvQAT, QATConv1d, "layer"),
    (nn.Conv2d, _ConvQAT, QATConv2d, "layer"),
    (nn.Conv3d, _ConvQAT, QATConv3d, "layer"),
    (nn.LayerNorm, _LayerNormQAT, QATLayerNorm, "layer"),
    (nn.GroupNorm, _GroupNormQAT, QATGroupNorm, "layer"),
    (nn.GELU, _GELUQAT, QATGELU, "activation"),
)
_made = {}  # original subclass -> its QAT class


def _kind(module):
    """(QAT class, "layer" | "activation") for a module prepare_qat rounds, else None."""
    if isinstance(module, QATModule):
        return None
    cls = type(module)
    for base, mixin, predefined, kind in _KINDS:
        if isinstance(module, base):
            if cls is base:
                return predefined, kind
            if cls not in _made:
                keeps_forward = cls.forward is base.forward
                _made[cls] = _named(mixin if keeps_forward else _FunctionalQAT, cls)
            return _made[cls], kind
    return None


def _act_role(module):
    role = getattr(type(module), "act_quant_role", None)
    if role is not None:
        if role not in ("operand", "output"):
            raise ValueError(f"{type(module).__name__}.act_quant_role must be 'operand' or 'output', got {role!r}")
        return role
    if isinstance(module, (Attention, Mlp)):
        return "operand"
    if isinstance(module, Block) or type(module).__name__.endswith("Block") or hasattr(module, "blocks"):
        return "output"
    return "operand"


def _selected(model, exclude):
    """(name, module) of every module not excluded (a module is excluded when its name or an ancestor's
    matches one of the shell-style patterns)."""
    patterns = [exclude] if isinstance(exclude, str) else list(exclude)
    excluded = []
    for name, module in model.named_modules():
        if any(name == e or name.startswith(e + ".") for e in excluded):
            continue
        if name and any(fnmatch.fnmatchcase(name, p) for p in patterns):
            excluded.append(name)
            continue
        yield name, module


def _is_matmul(module):
    return isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d))


def scale_layer(module, recipe, rounding, prequantized):
    """Make one Linear / Conv a scaled-recipe QAT layer (in place): its own input scale, per-channel
    weight scales, output left alone. Returns whether it was one."""
    kind = _kind(module)
    if kind is None or not _is_matmul(module):
        return False
    module.__class__ = kind[0]
    x, w = scaled_roundings(recipe, rounding)
    module.qat = _LayerRounding(x, w, _Round(None), prequantized and not issubclass(kind[0], _FunctionalQAT))
    return True


def _prepare_scaled(model, recipe, rounding, exclude, prequantized):
    # Only the matrix products: each Linear / Conv gets its own input scale and per-channel weight scales.
    for name, module in list(_selected(model, exclude)):
        scale_layer(module, recipe, rounding, prequantized)
    model.qat_recipe = recipe
    return model


def _prepare(model, recipe, grad, rounding, grad_rounding, exclude, prequantized):
    if recipe.is_scaled:
        return _prepare_scaled(model, recipe, rounding, exclude, prequantized)
    operand = _Round(recipe.operand, grad, rounding, grad_rounding)
    output = _Round(recipe.output, grad, rounding, grad_rounding)
    layer = _LayerRounding(operand, operand, output, prequantized)
    # Layers on the interception path keep their parameters unrounded (convert_ptq) and round at the call.
    functional = _LayerRounding(operand, operand, output, False)
    activation = _LayerRounding(operand, operand, operand, False)
    for name, module in list(_selected(model, exclude)):
        kind = _kind(module)
        if kind is not None:
            module.__class__ = kind[0]
            module.qat = (activation if kind[1] == "activation" else
                          functional if issubclass(kind[0], _FunctionalQAT) else layer)
        if hasattr(module, "act_quant"):
            hook = module.act_quant
            if hook is not None and not isinstance(hook, _Round):
                raise ValueError(f"prepare_qat: module {name or type(module).__name__!r} already has an act_quant "
                                 f"hook not set by prepare_qat ({hook!r}); remove it first")
            chosen = operand if _act_role(module) == "operand" else output
            module.act_quant = None if chosen.identity else chosen
    model.qat_recipe = recipe
    return model


def _check_model(model, argument="model"):
    if not isinstance(model, nn.Module):
        raise TypeError(f"{argument} must be a torch.nn.Module, got {type(model).__name__}")


def prepare_qat(model, recipe, grad=None, rounding="nearest", *, grad_rounding=None, exclude=()):
    """Quantization-aware training: transform `model` IN PLACE (and return it) so that its forward pass
    rounds at every point listed in this module's docstring, per `recipe` (a name such as "FP16_16",
    a spec such as "float(e=4,m=3)", or a Recipe; see vitfast.quant.recipes).

    Every nn.Linear / nn.Conv1d/2d/3d / nn.LayerNorm / nn.GroupNorm / nn.GELU keeps its identity and
    Parameters (its class becomes a quantizing subclass), so state-dict keys, optimizer references and
    checkpoints are unchanged: a QAT checkpoint loads (strict) into the ordinary model and vice versa.
    Gradients are straight-through; `grad` (a format: a name, "float(e=5,m=2)", a FloatingPoint...)
    also rounds the gradients crossing each rounding point, with `grad_rounding` (default: `rounding`).
    `rounding`: "nearest" (ties to even), "stochastic" or "nearest_away" for the forward rounding.
    `exclude`: shell-style module-name patterns (e.g. ["head", "patch_embed.*"]) left in fp32, with
    their submodules. The FP32 recipe without `grad` returns the model untouched. Preparing a prepared
    model replaces its recipe. The recipe is recorded in `model.qat_recipe`.

    Emulation note: every product is computed in fp32 and its output rounded once, so FP16_16 means
    fp16-rounded outputs (myrtle-vision), not an fp16 accumulator rounding after every addition.
    Scaled recipes (INT8, FP8_*_SCALED; see vitfast.quant.scaled) round only the matrix products'
    inputs (dynamic per-tensor scales) and weights (per-channel scales), straight-through."""
    _check_model(model)
    recipe = parse_recipe(recipe, "recipe")
    grad = None if grad is None else parse_format(grad, "grad")
    if recipe.is_scaled and grad is not None:
        raise ValueError(f"grad: the scaled recipe {recipe.name} rounds no gradients; use a plain recipe for grad=")
    check_rounding(rounding, "rounding")
    grad_rounding = rounding if grad_rounding is None else grad_rounding
    check_rounding(grad_rounding, "grad_rounding")
    if is_quantized(model):
        strip_qat(model)
    if recipe.is_fp32 and (grad is None or grad == FP32):
        return model
    return _prepare(model, recipe, grad, rounding, grad_rounding, exclude, prequantized=False)


def is_quantized(model):
    """Whether prepare_qat / convert_ptq left rounding in `model` (a QAT layer, a Linear8 or an act_quant hook)."""
    return any(isinstance(m, (QATModule, Linear8)) or isinstance(getattr(m, "act_quant", None), _Round)
               for m in model.modules())


def strip_qat(model):
    """Undo prepare_qat in place (returns the model): the original layer classes, no act_quant hooks.
    Parameters keep their current values (after convert_ptq: the rounded weights; a Linear8 becomes an
    nn.Linear with its dequantized weight: a model that is one Linear8 comes back as a new module)."""
    _check_model(model)
    if isinstance(model, Linear8):
        return model.to_linear()
    for name, module in list(model.named_modules()):
        if isinstance(module, Linear8):
            replace_module(model, name, module.to_linear())
    for module in model.modules():
        if isinstance(module, QATModule):
            module.__class__ = type(module)._qat_base
            del module.qat
        if isinstance(getattr(module, "act_quant", None), _Round):
            module.act_quant = None
    if "qat_recipe" in model.__dict__:
        del model.qat_recipe
    return model


def model_size_bytes(model, recipe="FP32", *, exclude=()):
    """Bytes to store `model`'s parameters and buffers when the parameters of every layer prepare_qat
    rounds (Linear, Conv, LayerNorm, GroupNorm) are stored packed at the recipe's operand width
    (fp16: 2 bytes, fp8: 1, TF32: 19 bits, fixed(wl=W,...): W bits) and everything else (position
    embeddings, class tokens, layer scales, buffers) in its own dtype. Each tensor rounds up to whole
    bytes; shared tensors count once. model_size_bytes(model, "FP32") is the fp32 size. Scaled recipes
    (INT8, FP8_*_SCALED) store Linear / Conv weights in 8 bits plus an fp32 scale per output channel."""
    _check_model(model)
    recipe = parse_recipe(recipe, "recipe")
    counted, total = set(), 0

    def add(t, width):
        nonlocal total
        if t is None or id(t) in counted:
            return
        counted.add(id(t))
        total += math.ceil(t.numel() * width / 8)

    for _, module in _selected(model, exclude):
        if recipe.is_scaled:
            # 8-bit weights plus one fp32 scale per output channel; biases and the rest in their own dtype.
            if _is_matmul(module):
                add(module.weight, 8)
                total += 4 * module.weight.shape[0]
        elif isinstance(module, QATModule) or _kind(module) is not None:
            for p in module._parameters.values():
                if p is not None:
                    add(p, recipe.operand_bits if p.is_floating_point() else p.element_size() * 8)
    for t in list(model.parameters()) + list(model.buffers()):
        add(t, t.element_size() * 8)
    return total
