"""Precision recipes for quantization-aware training and post-training quantization.

A recipe names two number formats:

* ``operand``: what every operation reads. The inputs, weights and biases of nn.Linear / nn.Conv* /
  nn.LayerNorm / nn.GroupNorm, GELU's input and output, and the whole attention core (q, k, v, the
  logits, the softmax probabilities and attn·v, through ``Attention.act_quant``).
* ``output``: what a matrix product or normalisation writes (the "accumulator" format of the
  q_format names), and the two running sums that accumulate across the network: the residual
  stream (``Block.act_quant``) and the embedded tokens after the cls/pos concat and add
  (``VisionTransformer.act_quant``).

Named recipes (myrtle-vision's ``q_format`` values plus the usual low-precision formats)::

    name       operand                      output    what it emulates
    FP32       fp32                         fp32      nothing (prepare_qat leaves the model alone)
    FP16_16    fp16 (5,10)                  fp16      myrtle FP16_16: fp16 in, fp16 out
    FP16_32    fp16 (5,10)                  fp32      myrtle FP16_32: fp16 in, fp32 accumulate/out
    TF32       tf32 (8,10)                  fp32      Ampere+ TF32 tensor cores
    BF16       bf16 (8,7)                   bf16      pure bf16 (bf16 in and out, bf16 residual stream)
    FP8_E4M3   e4m3fn (4,3), saturating     fp32      FP8 GEMMs (fp32 accumulation, fp32 output)
    FP8_E5M2   e5m2 (5,2)                   fp32      FP8 GEMMs (fp32 accumulation, fp32 output)
    float(e=E,m=M[,saturate=,subnormals=,finite=][,out=F])   FloatingPoint(E, M) for both (out= a named
                                                            format such as fp32 overrides the output)
    fixed(wl=W,fl=F[,clamp=,symmetric=][,out=F])            FixedPoint(W, F) for both, likewise

Accumulation: the emulation computes every product in fp32 and rounds its OUTPUT once (myrtle-vision's
approach). FP16_16 is therefore "fp16 operands, fp32 accumulation, output rounded to fp16"; it is NOT
an fp16 accumulator rounding after every add (HMMA.F16 / CUBLAS_COMPUTE_16F), which loses more for long
reductions. FP8 outputs are fp32 because FP8 tensor-core GEMMs accumulate in (at least) fp32 and
FP8 training keeps the residual stream in a wide format; for an fp8 residual stream as well, use
``float(e=4,m=3,saturate=1,finite=1)`` (both formats e4m3fn).

Scaled 8-bit recipes (INT8, FP8_E4M3_SCALED, FP8_E5M2_SCALED: per-channel weight scales, calibrated or
dynamic per-tensor activation scales, matrix products only) are vitfast.quant.scaled.ScaledRecipe
objects; parse_recipe returns them for those names.
"""
import re
from dataclasses import dataclass

from .number import FORMATS, BlockFloatingPoint, FixedPoint, FloatingPoint, as_number
from .scaled import SCALED_RECIPES, ScaledRecipe

__all__ = ["Recipe", "RECIPES", "parse_recipe", "parse_format", "format_bits", "format_name"]

FP32 = FORMATS["fp32"]


@dataclass(frozen=True)
class Recipe:
    """A precision recipe: `operand` (inputs, weights, activations) and `output` (products' outputs,
    residual sums) number formats; `name` is the canonical spelling (parse_recipe(name) == self)."""

    name: str
    operand: object
    output: object

    is_scaled = False

    @property
    def is_fp32(self):
        """True when neither format rounds anything (fp32 tensors pass through unchanged)."""
        return self.operand == FP32 and self.output == FP32

    @property
    def operand_bits(self):
        """Storage width of one operand (weight) in bits: 1 + exp + man, or wl."""
        return format_bits(self.operand)

    def __str__(self):
        return self.name


RECIPES = {
    "FP32": Recipe("FP32", FP32, FP32),
    "FP16_16": Recipe("FP16_16", FORMATS["fp16"], FORMATS["fp16"]),
    "FP16_32": Recipe("FP16_32", FORMATS["fp16"], FP32),
    "TF32": Recipe("TF32", FORMATS["tf32"], FP32),
    "BF16": Recipe("BF16", FORMATS["bf16"], FORMATS["bf16"]),
    "FP8_E4M3": Recipe("FP8_E4M3", FORMATS["fp8_e4m3"], FP32),
    "FP8_E5M2": Recipe("FP8_E5M2", FORMATS["fp8_e5m2"], FP32),
}

# key: (constructor argument, kind); "out" is handled separately.
_FLOAT_KEYS = {"e": "exp", "exp": "exp", "m": "man", "man": "man", "saturate": "saturate",
               "subnormals": "subnormals", "finite": "finite"}
_FIXED_KEYS = {"wl": "wl", "fl": "fl", "clamp": "clamp", "symmetric": "symmetric"}
_BOOL_ARGS = {"saturate", "subnormals", "finite", "clamp", "symmetric"}
_SPEC = re.compile(r"^\s*(float|fixed)\s*\((.*)\)\s*$", re.IGNORECASE | re.DOTALL)
_SPEC_HELP = ("float(e=E,m=M[,saturate=0|1,subnormals=0|1,finite=0|1][,out=FORMAT]) or "
              "fixed(wl=W,fl=F[,clamp=0|1,symmetric=0|1][,out=FORMAT])")


def format_bits(fmt):
    """Bits per element of a number format: 1 + exp + man (FloatingPoint), wl (FixedPoint, and
    BlockFloatingPoint, whose shared exponent is not counted)."""
    fmt = as_number(fmt)
    if isinstance(fmt, FloatingPoint):
        return 1 + fmt.exp + fmt.man
    return fmt.wl


def format_name(fmt):
    """Short name of a number format: "fp16", "float(e=4,m=2)", "fixed(wl=8,fl=6)"."""
    fmt = as_number(fmt)
    return next((k for k, v in FORMATS.items() if v == fmt), None) or _canonical(fmt)


def _parse_value(argument, spec, key, text):
    t = text.strip().lower()
    if key in _BOOL_ARGS:
        if t in ("1", "true", "yes", "on"):
            return True
        if t in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{argument}: {key}= takes 0/1 (or true/false) in {spec!r}, got {text.strip()!r}")
    if not re.fullmatch(r"[+-]?\d+", t):
        raise ValueError(f"{argument}: {key}= takes an integer in {spec!r}, got {text.strip()!r}")
    return int(t)


def _parse_spec(spec, argument, allow_out):
    """(number, output number or None, canonical text) of a float(...) / fixed(...) spec, or None when
    `spec` is not of that shape."""
    match = _SPEC.match(spec)
    if match is None:
        return None
    kind, body = match.group(1).lower(), match.group(2)
    keys = _FLOAT_KEYS if kind == "float" else _FIXED_KEYS
    args, out, seen = {}, None, set()
    for item in filter(None, (s.strip() for s in body.split(","))):
        if "=" not in item:
            raise ValueError(f"{argument}: expected key=value in {spec!r}, got {item!r}; the form is {_SPEC_HELP}")
        key, value = (s.strip() for s in item.split("=", 1))
        key = key.lower()
        if key in seen or (key in keys and keys[key] in args):
            raise ValueError(f"{argument}: {key}= is given twice in {spec!r}")
        seen.add(key)
        if key == "out" and allow_out:
            try:
                out = as_number(value, f"{argument} out=")
            except ValueError as e:
                raise ValueError(f"{argument}: out= in {spec!r} must be a named format; {e}") from None
        elif key in keys:
            args[keys[key]] = _parse_value(argument, spec, key, value)
        else:
            valid = sorted(keys) + (["out"] if allow_out else [])
            raise ValueError(f"{argument}: unknown key {key!r} in {spec!r}; {kind}(...) takes {', '.join(valid)}")
    required = ("exp", "man") if kind == "float" else ("wl", "fl")
    missing = [r for r in required if r not in args]
    if missing:
        raise ValueError(f"{argument}: {spec!r} lacks {', '.join(missing)}; the form is {_SPEC_HELP}")
    try:
        number = FloatingPoint(**args) if kind == "float" else FixedPoint(**args)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{argument}: invalid format {spec!r}: {e}") from None
    return number, out, _canonical(number, out)


def _canonical(number, out=None):
    if isinstance(number, FloatingPoint):
        text = f"float(e={number.exp},m={number.man}"
        defaults = FloatingPoint(1, 0)
        flags = ("saturate", "subnormals", "finite")
    elif isinstance(number, FixedPoint):
        text = f"fixed(wl={number.wl},fl={number.fl}"
        defaults = FixedPoint(2, 0)
        flags = ("clamp", "symmetric")
    else:
        return repr(number)
    for flag in flags:
        if getattr(number, flag) != getattr(defaults, flag):
            text += f",{flag}={int(getattr(number, flag))}"
    if out is not None and out != number:
        text += f",out={format_name(out)}"
    return text + ")"


def _unknown(spec, argument, what, valid):
    hint = ""
    if isinstance(spec, str) and spec.strip().lower() in ("fp16", "half", "float16"):
        hint = (" (plain FP16 is ambiguous: FP16_16 rounds each product's output to fp16, FP16_32 keeps "
                "outputs in fp32)")
    return ValueError(f"{argument}: unknown {what} {spec!r}{hint}; valid: {', '.join(valid)}, or {_SPEC_HELP}")


def parse_recipe(spec, argument="recipe"):
    """A Recipe for a name (FP32, FP16_16, FP16_32, TF32, BF16, FP8_E4M3, FP8_E5M2; case-insensitive,
    '-' or '_'; INT8, FP8_E4M3_SCALED, FP8_E5M2_SCALED give a ScaledRecipe), a spec "float(e=5,m=10)" / "fixed(wl=8,fl=6)" with optional further keys (saturate,
    subnormals, finite; clamp, symmetric; out=<named format> for a different output format), or a
    Recipe (returned as is). Unknown names raise ValueError naming `argument` and the valid names."""
    if isinstance(spec, (Recipe, ScaledRecipe)):
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"{argument} must be a recipe name ({', '.join(RECIPES)}), a spec such as "
                        f"'float(e=4,m=3)' or a Recipe; got {type(spec).__name__}")
    key = re.sub(r"[\s-]", "_", spec.strip()).upper()
    if key in RECIPES:
        return RECIPES[key]
    if key in SCALED_RECIPES:
        return SCALED_RECIPES[key]
    parsed = _parse_spec(spec, argument, allow_out=True)
    if parsed is None:
        raise _unknown(spec, argument, "precision recipe", list(RECIPES) + list(SCALED_RECIPES))
    number, out, name = parsed
    return Recipe(name, number, number if out is None else out)


def parse_format(spec, argument="fmt"):
    """One number format: a FloatingPoint / FixedPoint / BlockFloatingPoint (or qtorch number), a named
    format (fp32, tf32, bf16, fp16, fp8_e5m2, fp8_e4m3) or a spec "float(e=5,m=2)" / "fixed(wl=8,fl=6)"."""
    if isinstance(spec, str):
        parsed = _parse_spec(spec, argument, allow_out=False)
        if parsed is not None:
            return parsed[0]
        key = spec.strip().lower()
        try:
            return as_number(key, argument)
        except ValueError:
            raise _unknown(spec, argument, "number format", list(FORMATS)) from None
    if isinstance(spec, (FloatingPoint, FixedPoint, BlockFloatingPoint)):
        return spec
    return as_number(spec, argument)
