"""A self-supervised method is one class and one registry line: registered here, from outside the package,
a tiny method gets its flag (--ssl align), its own options (--align-dim, refused without --ssl align),
the shared multi-crop and k-NN options, and it trains, resumes bit-exactly and is evaluated with --knn
as DINO and SwAV are, touching no file of vitfast."""
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F

from vitfast.cli import UsageError
from vitfast.eval import main as eval_main
from vitfast.models.ssl_heads import MultiCropNet
from vitfast.train import main as train_main
from vitfast.training.config import Component, build_parser, option, resolve
from vitfast.training.config.kinds import AT_LEAST_1
from vitfast.training.methods import SSL_METHODS, register_ssl_method
from vitfast.training.methods.self_supervised import SelfSupervised
from vitfast.training.state import load_state

MODEL = ["--model", "vit_tiny_patch16_224", "--model-kwargs", "img_size=32,patch_size=8,embed_dim=32,depth=1,num_heads=2"]


@dataclass
class AlignOptions(Component):
    group = "ssl"

    align_dim: int = option(16, "align: width of the projection whose views are pulled together", AT_LEAST_1)


class Align(SelfSupervised):
    """The two global crops' projections pulled together (a negative cosine, each side the other's fixed
    target): it collapses, as a method without a teacher or a balance would, and that is no matter here."""

    name = "align"
    Options = AlignOptions
    default_crops = (2, 2)

    def setup(self, backbone, run):
        self.head = torch.nn.Linear(backbone.num_features, self.opts.align_dim)
        self.student = MultiCropNet(backbone, self.head).to(run.device)
        return self.student, f"projection {backbone.num_features} -> {self.opts.align_dim}"

    def loss(self, trained, x, y, step):
        z = F.normalize(trained(x), dim=-1)
        a, b = z.view(sum(self.crops[0]), -1, z.shape[-1])[:2]
        return -((a * b.detach()).sum(-1).mean() + (b * a.detach()).sum(-1).mean()) / 2

    def state(self):
        return {"ema": None, "ssl": {"method": self.name, "head": self.head.state_dict()}}

    def load_state(self, checkpoint):
        self.head.load_state_dict(checkpoint["ssl"]["head"])

    @property
    def reported(self):
        return self.model


@pytest.fixture
def registered():
    register_ssl_method(Align)  # the one line
    yield
    SSL_METHODS.pop(Align.name)


def test_the_method_brings_its_flag_and_its_options(registered):
    help_text = " ".join(build_parser().format_help().split())
    assert "dino | swav | mocov3 | align" in help_text and "--align-dim N" in help_text
    cfg = resolve(["--ssl", "align", "--align-dim", "8"])
    assert cfg["align_dim"] == 8 and cfg["lr"] == 5e-4  # its options, and the self-supervised recipe's defaults
    with pytest.raises(UsageError, match="--align-dim has no effect without --ssl align"):
        resolve(["--ssl", "dino", "--align-dim", "8"])
    with pytest.raises(UsageError, match="--head-out-dim has no effect without --ssl dino"):
        resolve(["--ssl", "align", "--head-out-dim", "8"])


def test_without_its_line_there_is_no_such_method():
    with pytest.raises(UsageError, match="--ssl must be one of dino, swav, mocov3, got 'align'"):
        resolve(["--ssl", "align"])


def test_it_trains_resumes_bit_exactly_and_is_scored_by_knn(registered, tmp_path, small_builtin):
    args = MODEL + ["--data", small_builtin, "--batch-size", "32", "--ptq-report", "", "--ssl", "align",
                    "--num-crops", "2,2", "--align-dim", "8", "--steps", "4", "--deterministic", "--eval-every",
                    "100", "--eval-every-steps", "2", "--keep-checkpoints", "2", "--quiet"]
    full = train_main(args + ["--output", str(tmp_path / "full")])
    assert full["steps"] == 4 and 0 <= full["val_acc1"] <= 100
    resumed = train_main(["--resume", str(tmp_path / "full" / "checkpoint-step2.pt"), "--output",
                          str(tmp_path / "again"), "--quiet"])
    a, b = (load_state(tmp_path / run / "checkpoint-last.pt") for run in ("full", "again"))
    assert a["step"] == b["step"] == 4 and a["config"]["align_dim"] == 8
    for part, name in [(a["model"], "model"), (a["ssl"]["head"], "head")]:
        other = b["model"] if name == "model" else b["ssl"]["head"]
        assert part.keys() == other.keys() and all(torch.equal(part[k], other[k]) for k in part), name
    assert resumed["val_acc1"] == full["val_acc1"]
    results = eval_main(["--checkpoint", str(tmp_path / "full" / "model.safetensors"), "--knn", "--quiet"])
    assert results["fp32"]["acc1"] == pytest.approx(full["val_acc1"])
