"""The packaged self-supervised recipes (issue 63, item 6) as a user meets them: each resolves to its
anchor's published settings, and each runs as `python -m vitfast.train -c NAME` does, on a small folder
with only the data, the batch and the run's length changed; the run's last lines give the commands that
score the backbone and fine-tune it, and those run as printed."""
import shlex

import pytest

from vitfast.eval import main as eval_main
from vitfast.train import main as train_main
from vitfast.training.config import resolve
from vitfast.training.header import cpu_has_bf16

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def test_dino_deit_small_is_dinos_imagenet_vit_s16():
    cfg = resolve(["-c", "dino_deit_small"])
    assert (cfg["ssl"], cfg["model"], cfg["opt"]) == ("dino", "deit_small_patch16_224", "adamw")
    assert (cfg["num_crops"], cfg["size_crops"], cfg["crop_scales"]) == ([2, 8], [224, 96], [[0.4, 1.0], [0.05, 0.4]])
    assert (cfg["head_hidden_dim"], cfg["head_bottleneck_dim"], cfg["head_out_dim"]) == (2048, 256, 65536)
    assert cfg["norm_last_layer"] and cfg["freeze_last_layer_epochs"] == 1
    assert (cfg["student_temp"], cfg["warmup_teacher_temp"], cfg["teacher_temp"]) == (0.1, 0.04, 0.07)
    assert (cfg["warmup_teacher_temp_epochs"], cfg["center_momentum"], cfg["teacher_momentum"]) == (30, 0.9, 0.996)
    assert (cfg["lr"], cfg["lr_base_size"], cfg["warmup_epochs"], cfg["clip_grad"]) == (5e-4, 256, 10, 3.0)
    assert (cfg["weight_decay"], cfg["weight_decay_end"], cfg["batch_size"]) == (0.04, 0.4, 1024)


def test_the_mocov3_recipes_are_moco_v3s_vit_settings_at_small_scale():
    for name in ("mocov3_cifar10", "mocov3_builtin"):
        cfg = resolve(["-c", name])
        assert (cfg["ssl"], cfg["num_crops"], cfg["moco_t"], cfg["moco_m"]) == ("mocov3", [2], 0.2, 0.99)
        assert cfg["stop_grad_conv1"] and cfg["moco_m_cos"] and cfg["clip_grad"] is None
    assert resolve(["-c", "mocov3_builtin"])["crop_grayscale"] == 1.0  # the built-in data's colour is no class


def test_swav_deit_small_is_vissls_vit_page():
    cfg = resolve(["-c", "swav_deit_small"])
    assert (cfg["ssl"], cfg["model"], cfg["total_num_crops"]) == ("swav", "deit_small_patch16_224", 6)
    assert (cfg["num_crops"], cfg["size_crops"], cfg["crop_scales"]) == ([2, 4], [160, 96], [[0.08, 1.0], [0.05, 0.14]])
    assert (cfg["head_dims"], cfg["head_use_bn"], cfg["num_clusters"]) == ([384, 2048, 128], True, [3000])
    assert (cfg["sinkhorn_iterations"], cfg["sinkhorn_epsilon"], cfg["swav_temp"]) == (3, 0.05, 0.1)
    assert cfg["crops_for_assign"] == [0, 1] and cfg["freeze_prototypes_epochs"] == 1


def test_swav_builtin_is_swav_with_the_ablations_lessons_for_the_builtin_data():
    cfg = resolve(["-c", "swav_builtin"])
    assert (cfg["ssl"], cfg["data"], cfg["model"], cfg["model_kwargs"]) == ("swav", "builtin", "vit_pico_patch4_32",
                                                                           {"patch_size": 8})
    assert (cfg["num_crops"], cfg["size_crops"], cfg["crop_scales"]) == ([2], [32], [[0.8, 1.0]])
    assert (cfg["crop_grayscale"], cfg["num_clusters"], cfg["steps"]) == (1.0, [1000], 2500)
    assert (cfg["sinkhorn_iterations"], cfg["sinkhorn_epsilon"], cfg["swav_temp"]) == (3, 0.05, 0.1)  # SwAV's own


def test_swav_cifar10_is_mocov3_cifar10s_twin_with_swavs_objective():
    swav, moco = resolve(["-c", "swav_cifar10"]), resolve(["-c", "mocov3_cifar10"])
    same = ("model", "model_kwargs", "data", "holdout", "batch_size", "epochs", "num_crops", "size_crops",
            "crop_scales", "warmup_epochs", "lr", "lr_base_size", "amp", "mean", "std")
    assert {k: swav[k] for k in same} == {k: moco[k] for k in same}
    assert (swav["ssl"], swav["num_clusters"], swav["queue_length"]) == ("swav", [3000], 0)
    assert (swav["sinkhorn_iterations"], swav["sinkhorn_epsilon"], swav["swav_temp"]) == (3, 0.05, 0.1)  # SwAV's own


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """40 built-in 32 px images, 4 per class, as a training folder (the last 10 held out by the runs)."""
    from PIL import Image

    from vitfast.data import BUILTIN_CLASSES, generate_builtin

    root = tmp_path_factory.mktemp("recipe_data")
    images, labels = generate_builtin("train", n=40)
    for i, (pixels, label) in enumerate(zip(images, labels)):
        (root / "train" / BUILTIN_CLASSES[label]).mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(root / "train" / BUILTIN_CLASSES[label] / f"{i}.png")
    return f"folder:{root}"


def printed_command(text, label):
    """The arguments of the `label:` line a finished run printed (after `python -m vitfast.X`)."""
    line = next(line for line in text.splitlines() if line.strip().startswith(label + ":"))
    words = shlex.split(line.split(":", 1)[1])
    assert words[:2] == ["python", "-m"], line
    return words[3:]


SMALL = ["--batch-size", "2", "--steps", "1", "--holdout", "10", "--workers", "0", "--ptq-report", ""]
# The GPU recipes' bf16 where this CPU computes it; on one that only emulates it (the run's header says so)
# a step and a k-NN validation of the 32 px ViT-S take about 50 s instead of 5, so the run is fp32 there
CPU_AMP = [] if cpu_has_bf16() else ["--amp", "none"]


# The ImageNet-sized recipes' runs (ViT-S/16 at 224 and 160 px, about two minutes each here) are long
# variants: their settings are held above, and each method's run by its 32 px recipe.
@pytest.mark.parametrize("recipe, header", [
    pytest.param("dino_deit_small", "crops 2 x 224 px 0.4-1 + 8 x 96 px 0.05-0.4 (patch 16)", marks=pytest.mark.long),
    pytest.param("swav_deit_small", "crops 2 x 160 px 0.08-1 + 4 x 96 px 0.05-0.14 (patch 16)",
                 marks=pytest.mark.long),
    ("dino_cifar10", "crops 2 x 32 px 0.25-1 + 6 x 16 px 0.08-0.25 (patch 4)"),
    ("mocov3_cifar10", "crops 2 x 32 px 0.2-1 (patch 4)"),
    ("swav_cifar10", "crops 2 x 32 px 0.2-1 (patch 4)"),
    ("swav_builtin", "crops 2 x 32 px 0.8-1 (patch 8)"),
])
def test_a_recipe_runs_and_its_closing_commands_run_as_printed(recipe, header, folder, tmp_path, capsys):
    packaged = resolve(["-c", recipe])
    no_warmup = ["--warmup-steps" if packaged["warmup_steps"] is not None else "--warmup-epochs", "0"]  # its unit
    amp = CPU_AMP if packaged["amp"] == "bf16" else []
    summary = train_main(["-c", recipe, "--data", folder, *SMALL, *no_warmup, *amp, "--output", str(tmp_path / "ssl")])
    text = capsys.readouterr().out
    assert header in text and summary["steps"] == 1
    # a 1-step run: the schedules counted in epochs (15 steps of 2 of the 30 training images) outlast it,
    # and the header says so
    if not recipe.startswith("mocov3"):
        assert "frozen 15 steps (all of the run's 1: its schedule is cut short)" in text
    assert f"best k-NN top-1 {summary['best_acc1']:.2f}%" in text
    if recipe != "dino_cifar10":  # one recipe's commands are enough (the same for the others): the cheapest
        return
    scored = eval_main(printed_command(text, "evaluate") + ["--quiet"])
    assert set(scored) == {"fp32", "bf16"} and scored["fp32"]["acc1"] == pytest.approx(summary["val_acc1"])
    assert "--linear-probe --probe-lr sweep" in " ".join(printed_command(text, "probe"))
    tuned = printed_command(text, "fine-tune")
    tuned[tuned.index("NEW_FOLDER")] = str(tmp_path / "tuned")
    train_main(tuned + ["--batch-size", "4", "--steps", "1", "--workers", "0", "--ptq-report", ""])
    assert "initialised from " + str(tmp_path / "ssl" / "checkpoint-last.pt") + ": the teacher backbone" in \
        capsys.readouterr().out
