"""python -m vitfast.eval's options: which weights (a run's file, or a model by name with its weights),
the data they are scored on, and the report (formats, k-NN or linear probe, outputs)."""
import os
from dataclasses import dataclass

from ...cli import UsageError, blame
from .component import Component, option
from .kinds import AT_LEAST_1, NON_NEGATIVE, OPEN_UNIT, POSITIVE, split_top_level

DEFAULT_CALIB_STEPS = 8
DEFAULT_MAPS_DIR = "attention_maps"
_BY_NAME, _FILE = ("--model NAME", lambda c: c["model"]), ("--checkpoint", lambda c: c["checkpoint"])


@dataclass
class EvalModelOptions(Component):
    group = "model"

    checkpoint: str | None = option(None, "a vitfast training checkpoint (checkpoint-best.pt / -last.pt) or a run's "
                                          "model.safetensors: the file says which model it holds")
    model: str | None = option(None, "registered model name, for weights that do not say (with --checkpoint-path)")
    checkpoint_path: str | None = option(None, "weights for --model: timm/official .pth, Google .npz, .safetensors",
                                         needs=_BY_NAME)
    model_kwargs: dict = option({}, "create_model overrides for --model, e.g. img_size=384,num_classes=10",
                                needs=_BY_NAME)
    ema: bool = option(False, "a run's EMA weights (default: the weights the run validated and reported, its EMA's "
                              "where it kept one)", needs=_FILE, exclusive="weights")
    raw: bool = option(False, "a run's trained weights, not its EMA's", needs=_FILE, exclusive="weights")

    def check(self, config, where):
        if self.checkpoint and self.model:
            raise UsageError("give --checkpoint (a file that says its model) or --model NAME --checkpoint-path "
                             "FILE, not both")
        if not self.checkpoint and not self.model:
            raise UsageError("give --checkpoint FILE, or --model NAME (with --checkpoint-path FILE)")
        if self.checkpoint_path and not os.path.isfile(self.checkpoint_path):
            raise UsageError(f"--checkpoint-path: no file at {self.checkpoint_path!r}")


@dataclass
class EvalDataOptions(Component):
    group = "data"

    data: str | None = option(None, "dataset spec (default: the checkpoint's training data)")
    split: str = option("val", "split to evaluate", ("val", "test"), metavar="{val,test}")
    batch_size: int = option(128, "images per batch", AT_LEAST_1)
    workers: int = option(0, "data loading processes", NON_NEGATIVE)
    img_size: int | None = option(None, "input resolution (default: the model's)", AT_LEAST_1)
    crop_pct: float | None = option(None, "resize to img_size / crop_pct, then center-crop (default: the run's, "
                                          "else the model's)", OPEN_UNIT)

    def check(self, config, where):
        if config["model"] and not self.data:
            raise UsageError(f"--data is required with --model {config['model']} (weights by name record no "
                             "training data)")


_OUTPUT = ("an output file (--json, --dvt-plot, --attention-maps)",
           lambda c: c["json"] or c["dvt_plot"] or c["attention_maps"])


@dataclass
class EvalReportOptions(Component):
    group = "report"

    quant: str = option("fp32", "comma-separated formats: fp32,fp16_32,fp16_16,bf16,tf32,fp8_e4m3,fp8_e5m2,int8,"
                                "fp8_e4m3_scaled,fp8_e5m2_scaled,float(e=..,m=..),fixed(wl=..,fl=..)")
    calib_steps: int | None = option(None, "scaled formats (int8, fp8_*_scaled): calibrate static activation scales "
                                           "on N batches of the training split, 0: dynamic per-batch scales "
                                           f"(default: {DEFAULT_CALIB_STEPS})", NON_NEGATIVE)
    knn: bool = option(False, "score by weighted k-NN on the model's features (DINO's protocol) with the training "
                              "split as memory bank, instead of its classifier: for self-supervised runs")
    knn_k: int | None = option(None, "--knn neighbours (default: the run's --knn-k, else 20)", AT_LEAST_1,
                               needs=("--knn", lambda c: c["knn"]))
    knn_t: float | None = option(None, "--knn temperature of the votes (default: the run's --knn-t, else 0.07)",
                                 POSITIVE, needs=("--knn", lambda c: c["knn"]))
    linear_probe: bool = option(False, "score by a linear classifier trained on the model's frozen features of the "
                                       "training split (DINO's linear evaluation on features computed once): for "
                                       "self-supervised runs")
    probe_epochs: int | None = option(None, "--linear-probe epochs over the training features (default: 100)",
                                      AT_LEAST_1, needs=("--linear-probe", lambda c: c["linear_probe"]))
    probe_lr: str | None = option(None, "--linear-probe SGD learning rate, on a cosine to 0; several, or 'sweep' "
                                        "(DINOv2's 13 rates 1e-5..0.1): a classifier each, the rate picked on a "
                                        "tenth of the training features held out (default: DINO's 0.001)",
                                  needs=("--linear-probe", lambda c: c["linear_probe"]), metavar="X[,Y...]|sweep")
    per_class: bool = option(False, "print precision/recall/F1 per class")
    json: str | None = option(None, "write the results to this JSON file")
    dvt_plot: str | None = option(None, "DVT: write the budgeted accuracy-vs-GMACs curve to this PNG")
    attention_maps: int = option(0, "write attention rollout PNGs of N images", NON_NEGATIVE)
    maps_dir: str | None = option(None, f"where --attention-maps writes (default: {DEFAULT_MAPS_DIR})",
                                  needs=("--attention-maps N", lambda c: c["attention_maps"]))
    overwrite: bool = option(False, "replace existing output files (--json, --dvt-plot, the --attention-maps PNGs)",
                             needs=_OUTPUT)
    quiet: bool = option(False, "no progress bars or progress lines; results still print")
    device: str | None = option(None, "cpu | cuda | cuda:N (default: cuda when available)")

    def check(self, config, where):
        if self.probe_lr is not None:
            probe_rates(self.probe_lr)
        if self.knn and self.linear_probe:
            raise UsageError("--knn and --linear-probe each fill the table's top-1: give one per evaluation")
        for flag, given in (("--knn", self.knn), ("--linear-probe", self.linear_probe)):
            if given and self.dvt_plot:
                raise UsageError(f"--dvt-plot needs the model's exits' predictions; {flag} scores features: give one")

    def recipes(self):
        """(--quant's format names, their recipes), each format once."""
        formats = split_top_level(self.quant)
        if not formats:
            raise UsageError("--quant names no format")
        twice = sorted({f for f in formats if [g.lower() for g in formats].count(f.lower()) > 1})
        if twice:
            raise UsageError(f"--quant names {', '.join(twice)} more than once")
        from ...quant import parse_recipe

        with blame("--quant"):
            recipes = [parse_recipe(fmt, "--quant") for fmt in formats]
        if self.calib_steps is not None and not any(r.is_scaled for r in recipes):
            raise UsageError("--calib-steps has no effect without a scaled format in --quant (int8, fp8_e4m3_scaled, "
                             "fp8_e5m2_scaled)")
        return formats, recipes


EVAL_COMPONENTS = (EvalModelOptions, EvalDataOptions, EvalReportOptions)


def probe_rates(text):
    """--probe-lr's rates: 'X', 'X,Y,...' or 'sweep' (DINOv2's grid)."""
    from ..linear_probe import SWEEP_LRS

    if text.strip().lower() == "sweep":
        return SWEEP_LRS
    try:
        rates = tuple(float(x) for x in text.split(","))
    except ValueError:
        rates = ()
    if not rates or not all(r > 0 for r in rates):
        raise UsageError(f"--probe-lr: expected a rate > 0, several separated by commas, or 'sweep'; got {text!r}")
    return rates
