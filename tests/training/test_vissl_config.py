"""A VISSL YAML read as a vitfast config (issue 63, item 2; issue 97, item 2): its multi-crop transform,
trunk, swav_head or dino_head, loss and epochs become our keys, after VISSL's config.KEY=value overrides;
what those sections ask that we do not do refuses the file in one line (another experiment), or needs a
flag (a trunk or data source we cannot read), or is said in a warning (launching)."""
import json
import warnings

import pytest

from vitfast.cli import UsageError
from vitfast.training.config import resolve
from tests.values import run_module

SWAV = """# @package _global_
config:
  DATA:
    NUM_DATALOADER_WORKERS: 5
    TRAIN:
      DATA_SOURCES: [disk_folder]
      DATA_PATHS: [/data/imagenet/train]
      BATCHSIZE_PER_REPLICA: 64
      TRANSFORMS:
        - name: ImgPilToMultiCrop
          total_num_crops: 6
          num_crops: [2, 4]
          size_crops: [160, 96]
          crop_scales: [[0.08, 1], [0.05, 0.14]]
        - name: RandomHorizontalFlip
          p: 0.5
        - name: ImgPilColorDistortion
          strength: 1.0
        - name: ImgPilGaussianBlur
          p: 0.5
          radius_min: 0.1
          radius_max: 2.0
        - name: ToTensor
        - name: Normalize
          mean: [0.485, 0.456, 0.406]
          std: [0.229, 0.224, 0.225]
  MODEL:
    TRUNK:
      NAME: vision_transformer
      VISION_TRANSFORMERS:
        IMAGE_SIZE: 224
        PATCH_SIZE: 16
        HIDDEN_DIM: 384
        NUM_LAYERS: 12
        NUM_HEADS: 6
        MLP_DIM: 1536
        CLASSIFIER: token
        DROP_PATH_RATE: 0.1
        QKV_BIAS: true
    HEAD:
      PARAMS: [
        ["swav_head", {"dims": [384, 2048, 128], "use_bn": True, "num_clusters": [3000, 3000]}],
      ]
  LOSS:
    name: swav_loss
    swav_loss:
      temperature: 0.1
      epsilon: 0.05
      num_iters: 3
      crops_for_assign: [0, 1]
      queue:
        queue_length: 3840
        start_iter: 0
  OPTIMIZER:
    name: adamw
    num_epochs: 100
  DISTRIBUTED:
    NUM_NODES: 2
    NUM_PROC_PER_NODE: 8
"""


def test_a_vissl_swav_config_trains_what_it_describes(tmp_path):
    path = tmp_path / "swav_vit.yaml"
    path.write_text(SWAV)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # everything in it is covered: no warning
        cfg = resolve(["-c", str(path)])
    # VISSL's path is the training split's folder; ours the folder holding train/ and val/
    assert cfg["ssl"] == "swav" and cfg["data"] == "folder:/data/imagenet" and cfg["batch_size"] == 64 * 16
    assert cfg["workers"] == 5
    assert (cfg["total_num_crops"], cfg["num_crops"], cfg["size_crops"]) == (6, [2, 4], [160, 96])
    assert cfg["crop_scales"] == [[0.08, 1.0], [0.05, 0.14]]
    assert cfg["model"] == "vit_small_patch16_224" and cfg["model_kwargs"]["mlp_ratio"] == 4.0
    assert cfg["drop_path"] == 0.1 and cfg["epochs"] == 100
    assert (cfg["head_dims"], cfg["head_use_bn"], cfg["num_clusters"]) == ([384, 2048, 128], True, [3000, 3000])
    assert (cfg["swav_temp"], cfg["sinkhorn_epsilon"], cfg["sinkhorn_iterations"]) == (0.1, 0.05, 3)
    assert cfg["queue_length"] == 3840 and cfg["mean"] == [0.485, 0.456, 0.406]
    assert cfg["crop_color_jitter"] == [0.8, 0.8, 0.8, 0.2] and cfg["crop_grayscale"] == 0.2


def test_a_vissl_dino_head_and_loss(tmp_path):
    path = tmp_path / "dino.yaml"
    path.write_text("config:\n  DATA: {TRAIN: {TRANSFORMS: [{name: ImgPilToMultiCrop, total_num_crops: 10, "
                    "num_crops: [2, 8], size_crops: [224, 96], crop_scales: [[0.4, 1], [0.05, 0.4]]}, "
                    "{name: ImgPilColorDistortion, strength: 0.5}, {name: RandomGrayscale, p: 0.3}]}}\n"
                    "  MODEL:\n    HEAD:\n      PARAMS: [[dino_head, {in_dim: 384, num_clusters: [65536], "
                    "normalize_last_layer: true, hidden_dim: 2048, bottleneck_dim: 256}]]\n"
                    "  LOSS: {name: dino_loss, dino_loss: {momentum: 0.996, teacher_temp_min: 0.04, "
                    "teacher_temp_max: 0.07, ema_center: 0.9}}\n")
    cfg = resolve(["-c", str(path), "--model", "deit_small_patch16_224"])
    assert cfg["ssl"] == "dino" and cfg["head_out_dim"] == 65536 and cfg["teacher_momentum"] == 0.996
    assert (cfg["warmup_teacher_temp"], cfg["teacher_temp"], cfg["center_momentum"]) == (0.04, 0.07, 0.9)
    assert cfg["crop_color_jitter"] == [0.4, 0.4, 0.4, 0.1] and cfg["crop_grayscale"] == 0.3


def test_a_mistyped_vissl_field_is_one_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("config:\n  DATA: {TRAIN: {}}\n  MODEL:\n    HEAD:\n      PARAMS: [[swav_head, {use_bn: true}]]\n")
    with pytest.raises(UsageError, match=r"VISSL config .*: missing field 'dims'"):
        resolve(["-c", str(path)])


# A fine-tuning config as VISSL's benchmark/fulltune composes one (a ViT trunk, a linear "mlp" classifier,
# the pretrained weights, cross entropy, SGD with a warmup and a cosine, the lr auto-scaled by the batch).
FINETUNE = """config:
  DATA:
    TRAIN:
      DATA_PATHS: [{data}]
      BATCHSIZE_PER_REPLICA: 8
      TRANSFORMS:
        - name: RandomResizedCrop
          size: 32
        - name: RandomHorizontalFlip
        - name: ToTensor
        - name: Normalize
          mean: [0.485, 0.456, 0.406]
          std: [0.229, 0.224, 0.225]
  MODEL:
    TRUNK:
      NAME: vision_transformer
      VISION_TRANSFORMERS: {{IMAGE_SIZE: 32, PATCH_SIZE: 8, HIDDEN_DIM: 32, NUM_LAYERS: 1, NUM_HEADS: 2,
                            MLP_DIM: 128, QKV_BIAS: True, DROP_PATH_RATE: 0.1}}
    HEAD:
      PARAMS: [["mlp", {{"dims": [32, 10]}}]]
    WEIGHTS_INIT:
      PARAMS_FILE: {weights}
      APPEND_PREFIX: trunk.
      STATE_DICT_KEY_NAME: ''
  LOSS:
    name: cross_entropy_multiple_output_single_target
  OPTIMIZER:
    name: sgd
    weight_decay: 0.0
    momentum: 0.9
    nesterov: True
    num_epochs: 30
    regularize_bias: True
    param_schedulers:
      lr:
        auto_lr_scaling: {{auto_scale: true, base_value: 0.01, base_lr_batch_size: 256}}
        name: composite
        schedulers:
          - {{name: linear, start_value: 0.0, end_value: 0.1}}
          - {{name: cosine, start_value: 0.1, end_value: 0}}
        lengths: [0.1, 0.9]
  DISTRIBUTED: {{NUM_NODES: 1, NUM_PROC_PER_NODE: 2}}
"""


def test_a_vissl_fine_tuning_config_fine_tunes_from_a_dino_checkpoint(tmp_path, small_builtin, capsys):
    import torch

    import vitfast
    from vitfast.train import main as train_main

    torch.manual_seed(0)
    trunk = vitfast.create_model("vit_base_patch16_224", num_classes=0, img_size=32, patch_size=8, embed_dim=32,
                                 depth=1, num_heads=2)
    teacher = {f"backbone.{k}": v for k, v in trunk.state_dict().items()}
    torch.save({"teacher": teacher, "student": {f"module.{k}": v for k, v in teacher.items()}, "epoch": 100},
               tmp_path / "dino.pth")
    path = tmp_path / "finetune.yaml"
    # VISSL's DATA_PATHS names the training split's own folder
    path.write_text(FINETUNE.format(data=small_builtin.split(":", 1)[1] + "/train", weights=tmp_path / "dino.pth"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # everything in it is covered: no warning
        cfg = resolve(["-c", str(path)])
    assert cfg["ssl"] is None and cfg["init_checkpoint"] == str(tmp_path / "dino.pth") and cfg["img_size"] == 32
    assert (cfg["opt"], cfg["momentum"], cfg["weight_decay"], cfg["epochs"], cfg["batch_size"]) == \
        ("sgd", 0.9, 0.0, 30, 16)
    assert (cfg["lr"], cfg["lr_base_size"], cfg["sched"], cfg["warmup_epochs"]) == (0.01, 256, "cosine", 3.0)
    assert (cfg["warmup_lr"], cfg["min_lr"]) == (0.0, 0)
    train_main(["-c", str(path), "--steps", "1", "--ptq-report", "", "--quiet", "--warmup-epochs", "0",
                "--output", str(tmp_path / "run")])
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("initialised from"))
    assert "the teacher backbone of a DINO training checkpoint (its heads dropped); freshly initialised for 10 " \
           "classes: head.bias, head.weight" in line


def test_what_vissls_optimizer_asks_that_vitfast_does_not_do_refuses_the_file_naming_each(tmp_path):
    path = tmp_path / "lars.yaml"
    path.write_text("config:\n  DATA: {TRAIN: {}}\n  MODEL: {}\n"
                    "  OPTIMIZER:\n    name: sgd\n    use_larc: true\n    nesterov: false\n    weight_decay: 1.0e-6\n"
                    "    regularize_bias: true\n    num_epochs: 100\n"
                    "    head_optimizer_params: {use_different_lr: true}\n"
                    "    param_schedulers:\n      lr: {name: multistep, values: [0.1, 0.01], milestones: [30]}\n"
                    "      weight_decay: {name: cosine, start_value: 0.04, end_value: 0.4}\n")
    with pytest.raises(UsageError) as e:
        resolve(["-c", str(path), "--model", "vit_tiny_patch16_224"])
    text = str(e.value)
    assert "asks for what vitfast does not do, so the run would be another experiment" in text
    for named in ("optimizer sgd with LARC (vitfast has --opt adamw, sgd, lamb) (config.OPTIMIZER.use_larc=false "
                  "for the optimizer without it)", "regularize_bias (vitfast decays no biases, norms or tokens: "
                  "config.OPTIMIZER.regularize_bias=false)", "lr schedule multistep",
                  "head_optimizer_params use_different_lr"):
        assert named in text, text
    assert "nesterov" not in text  # LARC refused already: the SGD it would have run is not named
    fixes = ["config.OPTIMIZER.use_larc=false", "config.OPTIMIZER.nesterov=true", "config.OPTIMIZER.regularize_bias=false",
             "config.OPTIMIZER.head_optimizer_params.use_different_lr=false",
             "config.OPTIMIZER.param_schedulers.lr={name: cosine, start_value: 0.1, end_value: 0.0}"]
    cfg = resolve(["-c", str(path), "--model", "vit_tiny_patch16_224", *fixes])  # each fix as VISSL takes it
    assert (cfg["opt"], cfg["epochs"], cfg["weight_decay"], cfg["weight_decay_end"]) == ("sgd", 100, 0.04, 0.4)
    assert (cfg["lr"], cfg["sched"], cfg["min_lr"]) == (0.1, "cosine", 0.0)


def test_a_vissl_dino_config_keeps_its_absolute_rate_and_dinos_per_crop_blur(tmp_path):
    """VISSL's DINO configs give the peak rate at their own batch (no auto_lr_scaling): DINO's default
    scaling by batch / 256 must not apply on top; their per-crop blur and solarisation are DINO's own."""
    path = tmp_path / "dino.yaml"
    blur = "[{name: ImgPilGaussianBlur, p: 1.0, radius_min: 0.1, radius_max: 2.0}]"
    path.write_text(
        "config:\n  DATA: {TRAIN: {BATCHSIZE_PER_REPLICA: 64, TRANSFORMS: [{name: ImgPilToMultiCrop, "
        "total_num_crops: 4, num_crops: [2, 2], size_crops: [224, 96], crop_scales: [[0.4, 1], [0.05, 0.4]]}, {name: "
        f"ImgPilMultiCropRandomApply, transforms: {blur}, prob: [1.0, 0.1, 0.5, 0.5]}}, {{name: "
        "ImgPilMultiCropRandomApply, transforms: [{name: ImgPilRandomSolarize, p: 1.0}], prob: [0, 0.2, 0, 0]}]}}\n"
        "  MODEL:\n    HEAD:\n      PARAMS: [[dino_head, {num_clusters: [1024]}]]\n"
        "  OPTIMIZER:\n    name: adamw\n    momentum: 0.9\n    num_epochs: 300\n    param_schedulers:\n      lr:\n"
        "        name: composite\n        schedulers: [{name: linear, start_value: 1.0e-5, end_value: 0.002}, "
        "{name: cosine, start_value: 0.002, end_value: 1.0e-5}]\n        lengths: [0.0333, 0.9667]\n"
        "      weight_decay: {name: cosine, start_value: 0.04, end_value: 0.4}\n"
        "  DISTRIBUTED: {NUM_NODES: 2, NUM_PROC_PER_NODE: 8}\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cfg = resolve(["-c", str(path), "--model", "deit_small_patch16_224"])
    assert (cfg["ssl"], cfg["opt"], cfg["batch_size"], cfg["lr"], cfg["lr_base_size"]) == \
        ("dino", "adamw", 1024, 0.002, None)
    assert (cfg["warmup_epochs"], cfg["warmup_lr"], cfg["min_lr"], cfg["epochs"]) == (9.99, 1e-5, 1e-5, 300)
    assert cfg["momentum"] == 0.9  # vitfast's default: AdamW has no momentum to set
    path.write_text(path.read_text().replace("prob: [1.0, 0.1, 0.5, 0.5]", "prob: [1.0, 1.0, 1.0, 1.0]"))
    with pytest.raises(UsageError, match=r"per-crop ImgPilGaussianBlur with probabilities 1.0, 1.0, 1.0, 1.0 "
                                         r"\(vitfast's crops blur and solarise as DINO's"):
        resolve(["-c", str(path), "--model", "deit_small_patch16_224"])


# A small VISSL DINO pretraining file as a VISSL user writes one for a ViT, DATA_PATHS at the train folder.
DINO_SMALL = """config:
  DATA:
    NUM_DATALOADER_WORKERS: 0
    TRAIN:
      DATA_SOURCES: [disk_folder]
      DATA_PATHS: [{data}/train]
      BATCHSIZE_PER_REPLICA: 16
      TRANSFORMS:
        - {{name: ImgPilToMultiCrop, total_num_crops: 4, num_crops: [2, 2], size_crops: [32, 16],
           crop_scales: [[0.4, 1], [0.05, 0.4]]}}
        - {{name: RandomHorizontalFlip, p: 0.5}}
        - {{name: ImgPilColorDistortion, strength: 0.5}}
        - {{name: ToTensor}}
  MODEL:
    TRUNK:
      NAME: {trunk}
      VISION_TRANSFORMERS: {{IMAGE_SIZE: 32, PATCH_SIZE: 8, HIDDEN_DIM: 32, NUM_LAYERS: 1, NUM_HEADS: 2,
                            MLP_DIM: 128}}
    HEAD:
      PARAMS: [[dino_head, {{num_clusters: [256], hidden_dim: 64, bottleneck_dim: 32}}]]
  LOSS: {{name: {loss}, dino_loss: {{momentum: 0.996, teacher_temp_min: 0.04, teacher_temp_max: 0.07}}}}
  OPTIMIZER: {{name: adamw, num_epochs: 100, use_larc: {larc}}}
  MACHINE: {{DEVICE: gpu}}
  DISTRIBUTED: {{NUM_NODES: 1, NUM_PROC_PER_NODE: 8}}
"""


def vissl_file(tmp_path, small_builtin, trunk="vision_transformer", loss="dino_loss", larc="false"):
    path = tmp_path / f"{trunk}_{loss}_{larc}.yaml"
    path.write_text(DINO_SMALL.format(data=small_builtin.split(":", 1)[1], trunk=trunk, loss=loss, larc=larc))
    return str(path)


def command(args, cwd):
    return run_module("vitfast.train", args, cwd)


def test_vissls_overrides_change_the_files_keys_and_num_epochs_is_what_trains(tmp_path, small_builtin):
    """config.OPTIMIZER.num_epochs=2 trains 2 epochs (of 160 images at 16: 20 steps); the launching keys say
    what they become (the global batch) or that torchrun and --device hold them."""
    path = vissl_file(tmp_path, small_builtin)
    done = command(["-c", path, "config.OPTIMIZER.num_epochs=2", "config.DISTRIBUTED.NUM_PROC_PER_NODE=1",
                    "config.MACHINE.DEVICE=cpu", "config.DISTRIBUTED.RUN_ID=auto", "--ptq-report", "",
                    "--output", "run"], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["steps"] == 20 and summary["val_acc1"] is not None
    warned = [line for line in done.stderr.splitlines() if "warning" in line]
    assert warned == [
        "vitfast.train: warning: config.DISTRIBUTED.NUM_PROC_PER_NODE=1: the global batch is "
        "DATA.TRAIN.BATCHSIZE_PER_REPLICA x NUM_NODES x NUM_PROC_PER_NODE, as in VISSL; the processes are "
        "torchrun's (torchrun --nnodes N --nproc-per-node M -m vitfast.train)",
        "vitfast.train: warning: config.DISTRIBUTED.RUN_ID=auto: vitfast's ranks and devices are torchrun's and "
        "--device's; nothing to set"], done.stderr
    cfg = resolve(["-c", path, "config.DISTRIBUTED.NUM_PROC_PER_NODE=1", "config.MACHINE.DEVICE=cpu"])
    assert (cfg["batch_size"], cfg["device"], cfg["epochs"], cfg["data"]) == (16, "cpu", 100, small_builtin)


@pytest.mark.parametrize("change, refusal", [
    ({"loss": "simclr_info_nce_loss"}, "loss simclr_info_nce_loss (vitfast has swav_loss and dino_loss, and cross "
                                       "entropy to fine-tune)"),
    ({"larc": "true"}, "optimizer adamw with LARC (vitfast has --opt adamw, sgd, lamb)"),
    ({"trunk": "resnet"}, "trunk resnet (vitfast trains Vision Transformers: a vision_transformer trunk); give "
                          "--model"),
])
def test_a_vissl_file_asking_for_another_experiment_is_refused_in_one_line(tmp_path, small_builtin, change, refusal):
    done = command(["-c", vissl_file(tmp_path, small_builtin, **change), "--steps", "1", "--output", "run"], tmp_path)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr[-2000:]
    assert refusal in done.stderr and "Traceback" not in done.stderr and not (tmp_path / "run").exists()


def test_what_needs_a_flag_is_taken_from_the_flag(tmp_path, small_builtin):
    resnet = vissl_file(tmp_path, small_builtin, trunk="resnet")
    assert resolve(["-c", resnet, "--model", "vit_tiny_patch16_224"])["model"] == "vit_tiny_patch16_224"
    path = vissl_file(tmp_path, small_builtin)
    for override, why in (("config.DATA.TRAIN.DATA_PATHS=[/data/cifar]", "DATA_PATHS /data/cifar (vitfast's --data "
                           "folder:DIR reads DIR/train/<class>/ and DIR/val/<class>/; VISSL's path is the train folder "
                           "itself); give --data"),
                          ("config.DATA.TRAIN.DATA_SOURCES=[disk_filelist]", "DATA_SOURCES disk_filelist (vitfast "
                           "reads image folders, VISSL's disk_folder); give --data")):
        with pytest.raises(UsageError) as e:
            resolve(["-c", path, override])
        assert str(e.value).endswith(why) and str(e.value).startswith(f"config {path!r}: "), str(e.value)
        assert resolve(["-c", path, override, "--data", "builtin"])["data"] == "builtin"


def test_a_vissl_override_without_a_vissl_file_is_refused():
    with pytest.raises(UsageError, match=r"^unknown argument 'config.OPTIMIZER.num_epochs=3': VISSL's override of a "
                                         r"VISSL file's key, and no -c file is one \(vitfast's own: --set key=value\)$"):
        resolve(["-c", "cifar10_vit", "config.OPTIMIZER.num_epochs=3"])
