"""Out of tree: DINO's and VISSL's own model code writes checkpoints in their own layouts, and vitfast reads
them (vitfast.models.checkpoint.ssl_backbone): the features of deit_small_patch16_224 loaded from each
file against the library's own backbone on the same images.

    python tools/ssl_checkpoint_layouts.py --dino DINO_CHECKOUT --vissl VISSL_CHECKOUT [--out FILE.md]

DINO_CHECKOUT: facebookresearch/dino (its vision_transformer.py and utils.py at HEAD, through `git show`);
VISSL_CHECKOUT: facebookresearch/vissl, whose trunk file vissl/models/trunks/vision_transformer.py is
imported (at HEAD and, with --vissl-2021 COMMIT, as of that commit, through `git show`), its imports
of VISSL's other modules and fairscale stood in for by the few names the trunk uses (timm's DropPath,
to_2tuple and trunc_normal_, which VISSL copied; an attribute dict; identity wrappers). Needs timm.
Nothing of either library is kept in this repository."""
import argparse
import datetime
import os
import subprocess
import sys
import tempfile
import textwrap

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
from common import write_table  # noqa: E402  (benchmarks/common.py)

STUBS = {
    "vissl/__init__.py": "",
    "vissl/config.py": """
        class AttrDict(dict):
            def __getattr__(self, k):
                try:
                    return self[k]
                except KeyError:
                    raise AttributeError(k) from None
        """,
    "vissl/models/__init__.py": "",
    "vissl/models/model_helpers.py": "from timm.layers import DropPath, to_2tuple, trunc_normal_\n",
    "vissl/models/trunks/__init__.py": "def register_model_trunk(name):\n    return lambda cls: cls\n",
    "vissl/utils/__init__.py": "",
    "vissl/utils/fsdp_utils.py": "def fsdp_wrapper(module, **kwargs):\n    return module\n",
    "vissl/utils/misc.py": """
        import contextlib
        import torch

        @contextlib.contextmanager
        def set_torch_seed(seed):
            state = torch.get_rng_state()
            torch.manual_seed(seed)
            try:
                yield
            finally:
                torch.set_rng_state(state)
        """,
    "fairscale/__init__.py": "",
    "fairscale/nn/__init__.py": "def checkpoint_wrapper(module):\n    return module\n",
}


def git(repo, *args):
    return subprocess.run(["git", "-C", repo, *args], capture_output=True, text=True, check=True).stdout


def vissl_trunks(checkout, old_commit, where):
    """{label: VISSL VisionTransformer class}: HEAD's trunk file and, given a commit, that commit's."""
    for path, text in STUBS.items():
        os.makedirs(os.path.dirname(os.path.join(where, path)), exist_ok=True)
        with open(os.path.join(where, path), "w") as f:
            f.write(textwrap.dedent(text))
    files = {"HEAD": "HEAD"} | ({old_commit[:8]: old_commit} if old_commit else {})
    out = {}
    for label, rev in files.items():
        text = git(checkout, "show", f"{rev}:vissl/models/trunks/vision_transformer.py")
        module = f"vissl_trunk_{label.lower()}"
        with open(os.path.join(where, module + ".py"), "w") as f:
            f.write(text)
        out[label] = __import__(module).VisionTransformer
    return out


def vissl_config(**more):
    from vissl.config import AttrDict

    trunk = AttrDict(IMAGE_SIZE=224, PATCH_SIZE=16, HIDDEN_DIM=384, NUM_LAYERS=12, NUM_HEADS=6, QKV_BIAS=True,
                     QK_SCALE=False, DROPOUT_RATE=0, ATTENTION_DROPOUT_RATE=0, DROP_PATH_RATE=0.1, MLP_DIM=1536,
                     CHECKPOINT_MLP=False, CHECKPOINT_BLOCK=False, MASKED_IMAGE_MODELING=AttrDict(NAME=""), **more)
    return AttrDict(INPUT_TYPE="rgb", _MODEL_INIT_SEED=0, TRUNK=AttrDict(VISION_TRANSFORMERS=trunk))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dino", required=True, help="a checkout (or bare mirror) of facebookresearch/dino")
    p.add_argument("--vissl", required=True, help="a checkout (or bare mirror) of facebookresearch/vissl")
    p.add_argument("--vissl-2021", default="045aadd70919e2aa93668a55aa310ce0f43ba528",
                   help="an older VISSL commit whose trunk names class_token / pos_embedding")
    p.add_argument("--out")
    args = p.parse_args(argv)
    work = tempfile.mkdtemp(prefix="ssl_layouts_")
    for name in ("vision_transformer.py", "utils.py"):  # DINO's, from a checkout or a bare mirror alike
        with open(os.path.join(work, name), "w") as f:
            f.write(git(args.dino, "show", f"HEAD:{name}"))
    sys.path.insert(0, work)
    import utils as dino_utils  # facebookresearch/dino's
    import vision_transformer as dino_vits
    trunks = vissl_trunks(args.vissl, args.vissl_2021, work)
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import vitfast
    from vitfast.models.checkpoint import load_for_finetune

    torch.manual_seed(0)
    files = {}

    def dino_wrapped():
        return dino_utils.MultiCropWrapper(dino_vits.vit_small(patch_size=16, drop_path_rate=0.1),
                                           dino_vits.DINOHead(384, 65536, use_bn=False, norm_last_layer=True))
    student, teacher = dino_wrapped(), dino_wrapped()  # initialised apart: the file must give the teacher
    student_state = {f"module.{k}": v for k, v in student.state_dict().items()}  # main_dino wraps it in DDP
    files["DINO training checkpoint (main_dino.py's save_dict)"] = (
        {"student": student_state, "teacher": teacher.state_dict(), "epoch": 100,
         "optimizer": torch.optim.AdamW(dino_utils.get_params_groups(student)).state_dict(),
         "args": argparse.Namespace(arch="vit_small", patch_size=16), "dino_loss": {"center": torch.zeros(1, 65536)}},
        teacher.backbone, {})
    files["DINO released backbone (dino_deitsmall16_pretrain.pth's layout)"] = (
        teacher.backbone.state_dict(), teacher.backbone, {})
    for label, trunk_class in trunks.items():
        trunk = trunk_class(vissl_config(), "vision_transformer").eval()
        names = "class_token" if "class_token" in trunk.state_dict() else "cls_token"
        state = {"phase_idx": 3, "iteration": 1000, "classy_state_dict": {"base_model": {"model": {
            "trunk": trunk.state_dict(), "heads": torch.nn.Linear(384, 128).state_dict()}, "meta": {}}}}
        eps = trunk.norm.eps
        files[f"VISSL checkpoint, trunk at {label} ({names}, LayerNorm eps {eps:g})"] = (
            state, lambda x, trunk=trunk: trunk(x)[0], {} if eps == 1e-6 else {"norm_eps": eps})
    x = torch.randn(4, 3, 224, 224)
    rows = []
    for label, (state, ref_model, kwargs) in files.items():
        path = os.path.join(work, "file.pth")
        torch.save(state, path)
        model = vitfast.create_model("deit_small_patch16_224", num_classes=0, **kwargs).eval()
        result = load_for_finetune(model, path)
        with torch.no_grad():
            want = (ref_model.eval() if isinstance(ref_model, torch.nn.Module) else ref_model)(x)
            got = model(x)
        extra = f"--model-kwargs norm_eps={kwargs['norm_eps']:g}" if kwargs else "-"
        rows.append(f"| {label} | {result.weights or '(plain backbone)'} | {extra} | "
                    f"{(got - want).abs().max().item():.1e} | {want.abs().max().item():.2f} |")
    dino_rev, vissl_rev = (git(repo, "rev-parse", "--short", "HEAD").strip() for repo in (args.dino, args.vissl))
    text = "\n".join([
        "# DINO's and VISSL's checkpoints in vitfast", "",
        f"`python tools/ssl_checkpoint_layouts.py` ({datetime.date.today()}; facebookresearch/dino {dino_rev}, "
        f"facebookresearch/vissl {vissl_rev}; torch {torch.__version__}, CPU): each file written by the library's own "
        "ViT-S/16 (random weights), read into vitfast's deit_small_patch16_224 (num_classes 0) as "
        "`vitfast.eval --checkpoint-path` and `vitfast.train --init-checkpoint` read it; the class token's "
        "features of 4 random 224 px images, vitfast's against the library's own backbone.", "",
        "| file | what vitfast takes | model kwargs | max abs difference | largest feature |",
        "|---|---|---|---|---|", *rows, ""])
    write_table(text, args.out)


if __name__ == "__main__":
    main()
