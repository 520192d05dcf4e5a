"""The model's options, and the model's own training defaults (the layer under config files and flags)."""
from dataclasses import dataclass

from ...cli import UsageError, blame
from .component import Component, option
from .kinds import AT_LEAST_1, FRACTION

# A model's own training defaults: the layer just above the options' defaults, under config files and
# flags, whenever the run trains that model, named or not. The default model's make the plain
# `python -m vitfast.train` reach >= 90% on the built-in 32 px data in ~300 steps: no random-resized crop of
# a 32 px image, no smoothing, a short warmup.
MODEL_DEFAULTS = {
    "vit_pico_patch4_32": dict(epochs=4, lr=2e-3, warmup_epochs=0.4, smoothing=0.0, scale=[1.0, 1.0]),
}


@dataclass
class ModelOptions(Component):
    group = "model"

    model: str = option("vit_pico_patch4_32", "registered model name (python -m vitfast.list)")
    model_kwargs: dict = option({}, "create_model overrides, e.g. patch_size=4,depth=6")
    img_size: int | None = option(None, "input resolution (default: the model's)", AT_LEAST_1)
    drop_path: float | None = option(None, "stochastic depth rate, drop_path_rate (default: the model's)", FRACTION)
    init_checkpoint: str | None = option(None, "initial weights: timm/official .pth, Google .npz, .safetensors; "
                                               "every tensor must fit the model but the classifier head")
    init_weights: str = option("reported", "which weights of a vitfast run's --init-checkpoint: reported (the "
                                           "EMA's where the run kept one), ema, raw", ("reported", "ema", "raw"),
                               needs=("--init-checkpoint", lambda c: c["init_checkpoint"]))
    backend: str | None = option(None, "eager | sdpa | vitfast (default: sdpa)", ("eager", "sdpa", "vitfast"))

    def check(self, config, where):
        for k in self.model_kwargs:  # create_model's overrides: the model itself says which it takes
            if not str(k).isidentifier():
                raise UsageError(f"{where('model_kwargs')}: {k!r} is not an argument name")
        if self.img_size and "img_size" in self.model_kwargs and self.model_kwargs["img_size"] != self.img_size:
            raise UsageError(f"{where('img_size')} {self.img_size} contradicts {where('model_kwargs')} "
                             f"img_size={self.model_kwargs['img_size']}; give one")
        from ...models import get_model_config

        with blame(where("model")):
            get_model_config(self.model)


def creation_kwargs(config):
    """create_model's keyword arguments for the model a run's config names (without num_classes): its
    --model-kwargs, --img-size and --drop-path."""
    kwargs = dict(config["model_kwargs"])
    if config.get("img_size"):
        kwargs["img_size"] = config["img_size"]
    if config.get("drop_path") is not None:
        kwargs["drop_path_rate"] = config["drop_path"]
    return kwargs
