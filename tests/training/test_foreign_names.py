"""The names users bring (issue 97, item 3): timm's, Lightning's, DINO's and solo-learn's flags answered with
ours in the one-line refusal, not with the nearest spelling (DINO's --data_path is not --drop-path)."""
import re

import pytest

from vitfast.cli import UsageError
from vitfast.training.config import FOREIGN, resolve
from vitfast.training.config.flags import DINO, SOLO_LEARN
from vitfast.training.config.resolve import build_parser
from vitfast.training.config.options import options


def refusal(argv):
    with pytest.raises(UsageError) as e:
        resolve(argv)
    return str(e.value)


@pytest.mark.parametrize("argv, answer", [
    (["--arch", "vit_small"], "--model with timm's name; DINO's --arch vit_small --patch_size 16 is --model "
                              "vit_small_patch16_224"),
    (["--use_fp16", "true"], "--amp fp16, or --amp bf16"),
    (["--local_crops_number", "8"], "--num-crops 2,N: global crops, then local"),
    (["--momentum_teacher", "0.996"], "--teacher-momentum"),
    (["--data_path", "/data/imagenet/train"], "--data folder:DIR, where DIR holds train/<class>/ and val/<class>/"),
    (["--batch_size_per_gpu", "64"], "--batch-size, the global batch of all ranks: DINO's --batch_size_per_gpu 64 on "
                                     "8 GPUs is --batch-size 512"),
    (["--optimizer", "lars"], "vitfast has no LARS"),
    (["--local_rank=0"], "vitfast reads torchrun's environment"),
    (["--method", "dino"], "--ssl dino | swav | mocov3"),
    (["--num_prototypes", "3000"], "--head-out-dim for DINO, --num-clusters for SwAV"),
])
def test_dino_and_solo_learn_flags_are_answered_with_ours(argv, answer):
    said = refusal(argv)
    assert said.startswith(f"unknown argument {argv[0]!r} (vitfast's: ") and answer in said, said


@pytest.mark.parametrize("name", sorted(FOREIGN))
def test_every_foreign_name_reaches_its_answer_and_names_flags_we_have(name):
    """A name of theirs that were also a flag of ours would never be answered; an answer naming a flag we
    lack would send the user to another refusal."""
    ours = set(build_parser(options()).flags())
    flag = "-" + name if len(name) == 1 else "--" + name
    assert flag not in ours and flag.replace("_", "-") not in ours
    assert f"(vitfast's: {FOREIGN[name]})" in refusal([flag, "1"])
    named = set(re.findall(r"--[a-z][a-z_-]*[a-z]", FOREIGN[name]))
    theirs = {f"--{n}" for n in (*DINO, *SOLO_LEARN)} | {"--nproc-per-node"}  # the examples' flags: not ours
    assert named - theirs <= ours, named - theirs - ours
