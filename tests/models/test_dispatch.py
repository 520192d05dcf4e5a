"""The vitfast backend's per-GPU choice between our kernels and the library path (vitfast.layers.dispatch):
the data file is what benchmarks/write_dispatch.py writes from the committed tables, choices follow
it, unknown GPUs and far shapes take the library path, and each library branch computes the same
model (checked on the CPU by steering every piece to it)."""
import copy
import filecmp
import json
import os
import subprocess
import sys

import pytest
import torch

import vitfast
from vitfast.layers import dispatch, fused, set_model_backend
from vitfast.layers import attention as attention_layer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
H100 = "NVIDIA H100 80GB HBM3"
TABLES = [os.path.join(ROOT, "benchmarks", "results", f) for f in ("kernels_h100.md", "attention_h100.md")]


def test_data_file_is_what_the_script_writes_from_the_tables(tmp_path):
    subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "write_dispatch.py"), *TABLES,
                    "--out-dir", str(tmp_path)], check=True, capture_output=True, cwd=ROOT)
    name = dispatch.gpu_slug(H100) + ".json"
    assert filecmp.cmp(tmp_path / name, os.path.join(dispatch.DATA_DIR, name), shallow=False)


def rows(op):
    return dispatch.load(H100)["ops"][op]


def test_every_measured_shape_gets_the_faster_path():
    data = dispatch.load(H100)
    assert data["gpu"] == H100 and data["source"]["torch"].startswith("2.11")
    for op in ("layer_norm", "linear_gelu", "linear_residual", "attention"):
        assert rows(op), op
        for row in rows(op):
            shape = {k: row[k] for k in ("D", "K", "N", "d", "residual", "bias", "grad", "dtype") if k in row}
            faster = row["ours_ms"] * dispatch.MARGIN <= row["library_ms"]
            assert dispatch.choose(op, H100, **shape) == faster, (op, row)


def test_h100_choices_as_measured():
    bf16 = dict(dtype="bfloat16")
    # layer_norm forward beat F.layer_norm at every width; forward+backward only at 192 and 384.
    assert dispatch.choose("layer_norm", H100, D=768, residual=False, grad=False, **bf16)
    assert dispatch.choose("layer_norm", H100, D=768, residual=True, grad=False, **bf16)
    assert dispatch.choose("layer_norm", H100, D=384, residual=False, grad=True, **bf16)
    assert not dispatch.choose("layer_norm", H100, D=768, residual=False, grad=True, **bf16)
    # Our mma.sync GEMMs ran at about half of cuBLAS on the H100: cuBLAS everywhere.
    assert not dispatch.choose("linear_gelu", H100, K=768, N=3072, grad=False, **bf16)
    assert not dispatch.choose("linear_residual", H100, K=3072, N=768, grad=False, **bf16)
    # Attention: cuDNN / flash SDPA were faster except with a bias at N = 257, d = 80, forward+backward.
    assert not dispatch.choose("attention", H100, N=197, d=64, bias=False, grad=False, **bf16)
    assert dispatch.choose("attention", H100, N=257, d=80, bias=True, grad=True, **bf16)


def test_unknown_gpu_far_shapes_and_unmeasured_flags_take_the_library_path():
    assert dispatch.load("NVIDIA Imaginary 9000") is None
    assert not dispatch.choose("layer_norm", "NVIDIA Imaginary 9000", D=768, residual=False, grad=False)
    assert not dispatch.choose("layer_norm", H100, D=4096, residual=False, grad=False)  # 4x the widest measured
    assert dispatch.choose("layer_norm", H100, D=1280, residual=False, grad=False)  # within 2x of 1024
    assert not dispatch.choose("layer_norm", H100, D=768, residual=True, grad=True)  # never measured
    assert not dispatch.choose("no_such_op", H100, D=768)
    # Measured in bfloat16: the fp32 residual stream of autocast training is another class.
    assert dispatch.choose("layer_norm", H100, D=384, residual=False, grad=True, dtype="bfloat16")
    assert not dispatch.choose("layer_norm", H100, D=384, residual=False, grad=True, dtype="float32")


def test_cpu_always_runs_our_ops():
    assert dispatch.use_kernel("linear_gelu", torch.zeros(2, 8), K=8, N=8, grad=False)


def test_gpu_names_map_to_data_files():
    assert dispatch.gpu_slug(H100) == "nvidia_h100_80gb_hbm3"
    data = json.load(open(os.path.join(dispatch.DATA_DIR, "nvidia_h100_80gb_hbm3.json")))
    assert data["rule"].startswith("ours where")


@pytest.mark.parametrize("name,kw", [
    ("vit_tiny_patch16_224", dict(img_size=32, patch_size=8, depth=2)),
    ("dvt_t2t_vit_14", dict(img_size=32, depth=2)),
])
@pytest.mark.parametrize("train", [False, True])
def test_library_branches_compute_the_same_model(monkeypatch, name, kw, train):
    """With every piece steered to the library path (as on a GPU where it measured faster), the vitfast
    backend equals the eager model, forward and gradients, and no fused op runs."""
    from vitfast.models import dvt  # noqa: F401  (registers dvt_*)

    torch.manual_seed(0)
    model = vitfast.create_model(name, num_classes=5, **kw).train(train)
    x = torch.randn(2, 3, 32, 32)
    calls = []
    for mod, names in ((fused, ("layer_norm", "linear_gelu", "linear_residual")), (attention_layer, ("fused_attention",))):
        for op in names:
            real = getattr(mod, op)
            monkeypatch.setattr(mod, op, lambda *a, _op=op, _real=real, **k: calls.append(_op) or _real(*a, **k))
    for mod in (fused, attention_layer):
        monkeypatch.setattr(mod, "use_kernel", lambda *a, **k: False)

    def run(backend):
        m = set_model_backend(copy.deepcopy(model), backend)
        torch.manual_seed(1)
        out = m(x)
        out = out[0] if isinstance(out, (list, tuple)) else out
        out.float().square().sum().backward()
        return out.detach(), [p.grad for p in m.parameters() if p.grad is not None]

    ref, ref_grads = run("eager")
    calls.clear()
    out, grads = run("vitfast")
    assert not [c for c in calls if c != "fused_attention"], calls  # norms and products: library
    assert "fused_attention" not in calls or name.startswith("dvt")  # DVT's reused logits need ours
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    assert len(grads) == len(ref_grads)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-5)
