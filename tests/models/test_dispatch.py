"""The vitfast backend's per-GPU choice between our kernels and the library path (vitfast.kernels.dispatch):
choices follow the data files (the package's H100 file, measured 2026-11-27 by the tuner,
vitfast.kernels.tune, for layer_norm and attention; the H200's of 2026-11-28 for every op, which an H100
reads for the GEMMs: one key), unknown GPUs and far shapes take the library path, and each library
branch computes the same model (checked on the CPU by steering every piece to it)."""
import copy
import json
import os

import pytest
import torch

import vitfast
from vitfast.kernels import dispatch, records, tune
from vitfast.layers import fused, set_model_backend
from vitfast.layers import attention as attention_layer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
H100, H200, KEY = "NVIDIA H100 80GB HBM3", "NVIDIA H200", "sm_90x132"


def rows(op, gpu=H100):
    return dispatch.load(gpu)["ops"][op]


def ours(op, gpu, key=None, **shape):
    """Whether the data measured ours faster (dispatch.measured); whether the backend takes it also
    depends on the kernels being current (test_h100_backend_takes_ours_only_where_current)."""
    return dispatch.measured(op, gpu, key, **shape) is not None


@pytest.mark.parametrize("gpu,ops", [
    (H100, ("layer_norm", "attention")),
    (H200, ("layer_norm", "linear_gelu", "linear_residual", "attention", "lp_matmul"))])
def test_every_measured_shape_gets_the_faster_path(gpu, ops):
    data = dispatch.load(gpu)
    assert data["gpu"] == gpu and data["source"]["torch"].startswith("2.11")
    for op in ops:
        assert rows(op, gpu), op
        for row in rows(op, gpu):
            shape = {k: row[k] for k in ("D", "K", "N", "d", "residual", "bias", "grad", "dtype", "accumulate")
                     if k in row}
            faster = row["ours_ms"] * dispatch.MARGIN <= row["library_ms"]
            assert ours(op, gpu, **shape) == faster, (op, row)


def test_h100_choices_as_measured():
    bf16 = dict(dtype="bfloat16")
    # The H100's rows (python -m vitfast.check --gpu, 2026-11-27): layer_norm beat F.layer_norm at every
    # width, forward and forward+backward (1.25-6.0x).
    assert ours("layer_norm", H100, D=768, residual=False, grad=False, **bf16)
    assert ours("layer_norm", H100, D=768, residual=True, grad=False, **bf16)
    assert ours("layer_norm", H100, D=768, residual=False, grad=True, **bf16)
    # The sm90 GEMMs, from the H200's rows (2026-11-28; the H100's were timed on kernels since rebuilt):
    # fc1 + GELU forward beat cuBLAS + GELU by 1.33x, its forward+backward by 1.02x (under the 5% margin);
    # fc2's forward beat cuBLAS + the add by 1.10x, ViT-L's by 1.03x (under the margin), proj's
    # forward+backward by 1.35x.
    assert "linear_gelu" not in dispatch.load(H100)["ops"]
    assert ours("linear_gelu", H100, key=KEY, K=768, N=3072, grad=False, **bf16)
    assert not ours("linear_gelu", H100, key=KEY, K=768, N=3072, grad=True, **bf16)
    assert ours("linear_residual", H100, key=KEY, K=3072, N=768, grad=False, **bf16)
    assert not ours("linear_residual", H100, key=KEY, K=4096, N=1024, grad=False, **bf16)
    assert ours("linear_residual", H100, key=KEY, K=768, N=768, grad=True, **bf16)
    assert not ours("linear_gelu", H100, K=768, N=3072, grad=False, **bf16)  # no key: the H100's file alone
    # Attention: cuDNN was faster without a bias at N = 197, ours with a bias at N = 257, d = 80.
    assert not ours("attention", H100, H=12, N=197, d=64, bias=False, grad=False, **bf16)
    assert ours("attention", H100, H=16, N=257, d=80, bias=True, grad=True, **bf16)
    # Keyed by the head count too: 64 heads is 4x the 16 measured there, so the library path.
    assert not ours("attention", H100, H=64, N=257, d=80, bias=True, grad=True, **bf16)
    # FP16_16 / FP16_32: cuBLAS's product was as fast or faster at ViT-B's shapes.
    fp16 = dict(dtype="float16")
    assert not ours("lp_matmul", H100, key=KEY, K=768, N=192, accumulate="fp16", **fp16)
    assert not ours("lp_matmul", H100, key=KEY, K=768, N=192, accumulate="fp32", **fp16)
    assert not ours("lp_matmul", H100, key=KEY, K=768, N=3072, accumulate="fp16", **fp16)


def test_a_gpu_with_no_rows_of_its_own_reads_those_of_its_key(tmp_path, monkeypatch):
    """An H800 (the H100 SXM's die and SM count) takes the rows shipped for its key, the H100's first; an
    H200 its own; a GPU of another key, or one asked without its key, none; rows measured on this machine
    come first."""
    monkeypatch.setenv("VITFAST_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(dispatch, "_data", {})
    fc2 = dict(K=3072, N=768, grad=False, dtype="bfloat16")
    assert not os.path.isfile(os.path.join(dispatch.DATA_DIR, "nvidia_h800.json"))
    assert dispatch.load("NVIDIA H800", KEY) is dispatch.load("NVIDIA H800", KEY) == dispatch.load(H100)
    # fc2's row is the H200's (the H100's file has no GEMM rows): an H800 takes it as an H100 does.
    assert dispatch.measured("linear_residual", "NVIDIA H800", KEY, **fc2) == dispatch.measured(
        "linear_residual", H100, KEY, **fc2) == "coop_128x256_2x1"
    assert dispatch.measured("linear_residual", H100, **fc2) is None  # without its key, the H100's file alone
    assert dispatch.load("NVIDIA H200", KEY)["gpu"] == "NVIDIA H200"
    assert dispatch.load("NVIDIA H800") is None and dispatch.load("NVIDIA H100 PCIe", "sm_90x114") is None
    mine = dict(dispatch.load(H100), gpu="NVIDIA GH200 480GB", source={"tuned by": "test"})
    tune.write(mine, dispatch.user_dir())
    dispatch.forget_data()
    assert dispatch.load("NVIDIA H800", KEY)["source"] == {"tuned by": "test"}
    dispatch.forget_data()


def test_unknown_gpu_far_shapes_and_unmeasured_flags_take_the_library_path():
    assert dispatch.load("NVIDIA Imaginary 9000") is None
    assert not ours("layer_norm", "NVIDIA Imaginary 9000", D=768, residual=False, grad=False)
    assert not ours("layer_norm", H100, D=4096, residual=False, grad=False)  # 4x the widest measured
    assert ours("layer_norm", H100, D=1280, residual=False, grad=False)  # within 2x of 1024
    assert not ours("layer_norm", H100, D=768, residual=True, grad=True, dtype="float16")  # never measured
    assert not ours("no_such_op", H100, D=768)
    # Measured in bfloat16 and (autocast training's residual stream) float32: float16 is another class.
    assert ours("layer_norm", H100, D=384, residual=False, grad=True, dtype="bfloat16")
    assert not ours("layer_norm", H100, D=384, residual=False, grad=True, dtype="float16")


def test_h100_backend_takes_ours_only_where_current():
    """The backend takes a measured win only while its kernels are this build's and verified on the H100's
    key (vitfast.kernels.gate): with the shipped records and a build of the toolchain they name, every
    win below; with any other build (this machine's, say), none."""
    bf16 = dict(dtype="bfloat16")
    shipped = records.merged(records.SHIPPED_DIR)
    built = vitfast.kernel_fingerprints()
    now = set(records.verified_families(shipped, built).get(KEY, []))
    # layer_norm and attention from the H100's own rows, the GEMMs from the H200's (the H100's were dropped)
    measured_at = {**dispatch.load(H200)["source"]["fingerprints"],
                   **dispatch.load(H100)["source"]["fingerprints"]}

    def current(*families):
        return all(f in now and measured_at[f] == built[f] for f in families)

    assert dispatch.choose("layer_norm", H100, KEY, D=768, residual=False, grad=False, **bf16) == current("layer_norm")
    assert dispatch.choose("attention", H100, KEY, H=16, N=257, d=80, bias=True, grad=True,
                           **bf16) == current("attention_sm90", "attention_mma")
    gemm = current("gemm_sm90", "gemm_mma")
    assert dispatch.choose("linear_residual", H100, KEY, K=768, N=768, grad=True, **bf16) == gemm
    assert dispatch.choose("linear_gelu", H100, KEY, K=768, N=3072, grad=False, **bf16) == gemm
    assert not dispatch.choose("linear_gelu", H100, KEY, K=768, N=3072, grad=True, **bf16)  # under the margin
    assert not dispatch.choose("linear_residual", H100, KEY, K=3072, N=768, grad=False, **bf16)


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
    for mod, names in ((fused, ("_layer_norm", "_linear_gelu", "_linear_residual")), (attention_layer, ("_attention",))):
        for op in names:
            real = getattr(mod, op)
            monkeypatch.setattr(mod, op, lambda *a, _op=op, _real=real, **k: calls.append(_op) or _real(*a, **k))
    for mod in (fused, attention_layer):
        monkeypatch.setattr(mod, "use_kernel", lambda *a, **k: False)
    monkeypatch.setattr(fused, "kernel_config", lambda *a, **k: None)  # the products' choice (None: library)

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
    assert not [c for c in calls if c != "_attention"], calls  # norms and products: library
    assert "_attention" not in calls or name.startswith("dvt")  # DVT's reused logits need ours
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    assert len(grads) == len(ref_grads)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-5)


def use_data(monkeypatch, folder, data):
    """The dispatch reads `data` as the H100's package file."""
    tune.write(data, str(folder))
    monkeypatch.setattr(dispatch, "DATA_DIR", str(folder))
    monkeypatch.setattr(dispatch, "_data", {})
    monkeypatch.setattr(dispatch, "_choices", {})


def test_the_fastest_configuration_is_chosen_and_the_changes_named(tmp_path, monkeypatch):
    """Rows as the tuner makes them from its timings (times made up): fc1 at ViT-B, ping-pong fastest
    and 1.3x the library; fc2's best configuration within the 5% margin, so the library path."""
    bf16 = dict(dtype="bfloat16")
    fc1 = tune.product_row(dict(K=768, N=3072, grad=False), {"coop_128x128": 0.52, "pingpong_128x128_2x1": 0.47,
                                                              "coop_128x256_2x1": 0.5}, 0.61, "F.gelu(F.linear)")
    assert (fc1["use"], fc1["config"], fc1["ours_ms"], fc1["library_ms"]) == ("vitfast", "pingpong_128x128_2x1",
                                                                              0.47, 0.61)
    assert fc1["configs"] == {"coop_128x128": 0.52, "pingpong_128x128_2x1": 0.47, "coop_128x256_2x1": 0.5}
    fc2 = tune.product_row(dict(K=3072, N=768, grad=False), {"coop_128x128": 0.54, "coop_128x256_2x1": 0.535}, 0.56,
                           "F.linear + r")
    assert (fc2["use"], fc2["config"]) == ("library", "coop_128x256_2x1")  # 0.535 x 1.05 > 0.560
    norms = [tune.entry(dict(D=768, residual=False, grad=False), 0.07, 0.11, "F.layer_norm"),
             tune.entry(dict(D=768, residual=True, grad=True), 0.5, 0.7, "F.layer_norm after x + r"),
             tune.entry(dict(D=768, residual=False, grad=True), 0.4, 0.41, "F.layer_norm", "float32")]
    assert [r["use"] for r in norms] == ["vitfast", "vitfast", "library"]  # 0.400 x 1.05 > 0.410
    one = tune.entry(dict(K=768, N=3072, accumulate="fp16"), 0.4, 0.45, "cuBLAS fp16 accumulation", "float16")
    assert "config" not in one  # one kernel, no configurations: "auto"
    shipped = dispatch.load(H100)
    data = dict(shipped, ops=dict(shipped["ops"], linear_gelu=[fc1], linear_residual=[fc2], layer_norm=norms,
                                  lp_matmul=[one]))
    # what it replaces: fc1 measured slower than the library
    slower = tune.product_row(dict(K=768, N=3072, grad=False), {"coop_128x128": 0.83}, 0.565, "F.gelu(F.linear)")
    lines = tune.changes(dict(shipped, ops=dict(shipped["ops"], linear_gelu=[slower])), data)
    assert ("changed: linear_gelu K=768, N=3072, grad=False: library (0.83 vs 0.565 ms) -> "
            "vitfast pingpong_128x128_2x1 (0.47 vs 0.61 ms)") in lines
    assert tune.changes(data, data) == ["no choice changed"] and len(tune.changes(None, data)) == 1
    # the backend then asks for that configuration at that shape
    use_data(monkeypatch, tmp_path, data)
    assert dispatch.measured("linear_gelu", H100, K=768, N=3072, grad=False, **bf16) == "pingpong_128x128_2x1"
    assert dispatch.measured("linear_residual", H100, K=3072, N=768, grad=False, **bf16) is None
    assert dispatch.measured("layer_norm", H100, D=768, residual=False, grad=False, **bf16) == "auto"
    # training under autocast: norm2 with the float32 residual (keyed by the bf16 branch), norm1 on float32
    assert dispatch.measured("layer_norm", H100, D=768, residual=True, grad=True, **bf16) == "auto"
    assert dispatch.measured("layer_norm", H100, D=768, residual=False, grad=True, dtype="float32") is None
    assert dispatch.measured("lp_matmul", H100, K=768, N=3072, accumulate="fp16", dtype="float16") == "auto"


def test_a_configuration_not_built_for_the_case_takes_the_default(monkeypatch):
    import warnings

    monkeypatch.setattr(fused, "kernel_config", lambda *a, **k: "coop_128x192")
    lin = torch.nn.Linear(16, 24).requires_grad_(False)
    x = torch.randn(3, 16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a kind without that configuration is no error: no warning
        assert fused.fused_linear("linear_gelu", lin, x) == "coop_128x192"  # no gradient: built for "act"
        assert fused.fused_linear("linear_gelu", lin, x.requires_grad_()) == "auto"  # "act_aux" has no 128x192
        monkeypatch.setattr(fused, "kernel_config", lambda *a, **k: "pingpong_64x128")
        # measured with a bf16 residual; autocast's float32 residual stream has no small-M kernel
        assert fused.fused_linear("linear_residual", lin, x, residual=torch.randn(3, 24)) == "auto"
        assert fused.fused_linear("linear_residual", lin, x.bfloat16(), residual=torch.randn(3, 24).bfloat16()) == \
            "pingpong_64x128"


def test_a_configuration_this_build_lacks_falls_back_to_auto_with_one_warning(monkeypatch):
    import warnings

    monkeypatch.setattr(fused, "kernel_config", lambda *a, **k: "coop_256x256_4x1")  # from another build
    monkeypatch.setattr(fused, "_stale", set())
    lin = torch.nn.Linear(16, 24).requires_grad_(False)
    x = torch.randn(3, 16)
    with pytest.warns(UserWarning, match="configuration 'coop_256x256_4x1', which this build does not have"):
        assert fused.fused_linear("linear_gelu", lin, x) == "auto"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert fused.fused_linear("linear_residual", lin, x, residual=torch.randn(3, 24)) == "auto"  # once


def test_the_fp8_chain_takes_its_fastest_configurations(tmp_path, monkeypatch):
    two = ("coop_128x128", "pingpong_64x128")
    rows = {what: tune.fp8_row(what, K, N, dict(zip(two, times)), bf16)
            for what, K, N, times, bf16 in (("qkv", 768, 2304, (0.466, 0.684), 0.264),
                                            ("fc1", 768, 3072, (0.753, 1.13), 0.563),
                                            ("fc2", 3072, 768, (0.217, 0.288), 0.382))}
    fc1 = rows["fc1"]
    assert (fc1["config"], fc1["use"], fc1["dtype"], fc1["epilogue"]) == ("coop_128x128", "vitfast", "float8_e4m3fn",
                                                                          "gelu_e4m3")
    assert fc1["configs"] == {"coop_128x128": 0.753, "pingpong_64x128": 1.13}
    assert rows["qkv"]["use"] == "vitfast"  # slower than bf16, but the chain has no library product
    use_data(monkeypatch, tmp_path, dict(dispatch.load(H100), ops={"fp8_linear": list(rows.values())}))
    e4m3 = dict(dtype="float8_e4m3fn")
    assert dispatch.measured("fp8_linear", H100, K=3072, N=768, epilogue="residual", **e4m3) == "coop_128x128"
    assert dispatch.measured("fp8_linear", H100, K=768, N=768, epilogue="residual", **e4m3) is None  # 4x from fc2's K
