"""A VISSL YAML read as a vitfast config (issue 63, item 2): its multi-crop transform, trunk, swav_head or
dino_head, loss and epochs become our keys; what those sections hold that we do not do is named in one
warning."""
import warnings

import pytest

from vitfast.cli import UsageError
from vitfast.training.config import resolve

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
        - name: ImgPilRandomPosterize
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
    with pytest.warns(UserWarning, match=r"no vitfast equivalent for transform ImgPilRandomPosterize; ignored"):
        cfg = resolve(["-c", str(path)])
    assert cfg["ssl"] == "swav" and cfg["data"] == "folder:/data/imagenet/train" and cfg["batch_size"] == 64 * 16
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
    path.write_text(FINETUNE.format(data=small_builtin.split(":", 1)[1], weights=tmp_path / "dino.pth"))
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


def test_what_vissls_optimizer_asks_that_vitfast_does_not_do_is_named(tmp_path):
    path = tmp_path / "lars.yaml"
    path.write_text("config:\n  DATA: {TRAIN: {}}\n  MODEL: {}\n"
                    "  OPTIMIZER:\n    name: sgd\n    use_larc: true\n    nesterov: false\n    weight_decay: 1.0e-6\n"
                    "    regularize_bias: true\n    num_epochs: 100\n"
                    "    head_optimizer_params: {use_different_lr: true}\n"
                    "    param_schedulers:\n      lr: {name: multistep, values: [0.1, 0.01], milestones: [30]}\n"
                    "      weight_decay: {name: cosine, start_value: 0.04, end_value: 0.4}\n")
    with pytest.warns(UserWarning) as caught:
        cfg = resolve(["-c", str(path), "--model", "vit_tiny_patch16_224"])
    text = str(caught[0].message)
    for named in ("optimizer sgd with LARC", "regularize_bias", "lr schedule multistep",
                  "head_optimizer_params use_different_lr"):
        assert named in text, text
    assert "nesterov" not in text  # LARC refused already: the SGD it would have run is not named
    assert (cfg["epochs"], cfg["weight_decay"], cfg["weight_decay_end"]) == (100, 0.04, 0.4)


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
    with pytest.warns(UserWarning, match=r"per-crop ImgPilGaussianBlur with probabilities \[1.0, 1.0, 1.0, 1.0\]"):
        resolve(["-c", str(path), "--model", "deit_small_patch16_224"])
