"""The "vitfast" backend (fused LayerNorm, linear+GELU, linear+residual) against the eager models:
ViT-B/16, DeiT-S and DVT-T2T-ViT-14, forward and gradients, each within 2x the error of the eager fp32
model against the eager float64 model; the same state dict; fallbacks for LayerScale, drop path, QAT.
CPU here; on CUDA the same in bf16/fp16 when a GPU is present."""
import copy
import warnings

import pytest
import torch

import vitfast
from vitfast.layers import fused, set_model_backend
from vitfast.models import dvt, t2t_vit  # noqa: F401  (registers the models)
from tests.ops.precision import assert_2x_torch
from tests.values import needs_cuda


@pytest.fixture(autouse=True)
def one_thread_and_quiet_fallbacks():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="vitfast backend: attention falls back")
        yield
    torch.set_num_threads(threads)


def flat(out):
    return torch.cat([o.flatten() for o in out]) if isinstance(out, (list, tuple)) else out.flatten()


def run(model, x, backend):
    set_model_backend(model, backend)
    model.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_()
    out = flat(model(x))
    g = torch.Generator().manual_seed(5)
    out.backward(torch.randn(out.shape, generator=g, dtype=torch.float64).to(out.device, out.dtype))
    grads = torch.cat([x.grad.flatten()] + [p.grad.flatten() for p in model.parameters() if p.grad is not None])
    return out.detach(), grads


def check_parity(model, x):
    ref_model = copy.deepcopy(model).double()
    ref_out, ref_grads = run(ref_model, x.double(), "eager")
    eager_out, eager_grads = run(model, x, "eager")
    ours_out, ours_grads = run(model, x, "vitfast")
    assert_2x_torch(ours_out, eager_out, ref_out, floor=1e-6, what="forward")
    assert_2x_torch(ours_grads, eager_grads, ref_grads, floor=1e-6, what="gradients")
    return ours_out


CASES = {
    "vit_base_patch16_224": dict(img_size=64, depth=4, num_classes=10),  # ViT-B width, 4 of its 12 identical blocks
    "deit_small_patch16_224": dict(img_size=64, num_classes=10),
    "dvt_t2t_vit_14": dict(img_size=64, depth=2, num_classes=10),
}


@pytest.mark.parametrize("name", list(CASES))
def test_vitfast_backend_matches_eager_within_2x(name):
    torch.manual_seed(0)
    model = vitfast.create_model(name, **CASES[name]).train()  # train mode: dropout and drop path are 0
    keys = {k: v.clone() for k, v in model.state_dict().items()}
    check_parity(model, torch.randn(2, 3, 64, 64))
    assert model.state_dict().keys() == keys.keys()


def test_the_fused_ops_are_the_ones_running(monkeypatch):
    model = vitfast.create_model("deit_small_patch16_224", img_size=32, depth=1, num_classes=10).eval()
    calls = []
    for name in ("_layer_norm", "_linear_gelu", "_linear_residual"):  # the ops' checked-once entries
        op = getattr(fused, name)
        monkeypatch.setattr(fused, name, lambda *a, _op=op, _n=name[1:], **k: calls.append(_n) or _op(*a, **k))
    set_model_backend(model, "vitfast")
    with torch.no_grad():
        model(torch.randn(1, 3, 32, 32))
    assert calls.count("linear_residual") == 2 and calls.count("linear_gelu") == 1
    assert calls.count("layer_norm") == 2  # norm1, norm2 (the model's final norm is not a block's)


@pytest.mark.parametrize("kw", [dict(init_values=1e-5), dict(drop_path_rate=0.5)])
def test_layer_scale_and_drop_path_fall_back(kw):
    """LayerScale and an active drop path are not in the fused epilogues: those pieces run eagerly, and
    the model still computes what eager computes (same random draws, in the same order)."""
    torch.manual_seed(0)
    model = vitfast.create_model("vit_tiny_patch16_224", img_size=32, depth=2, num_classes=10, **kw).train()
    x = torch.randn(2, 3, 32, 32)
    outs = []
    for backend in ("eager", "vitfast"):
        set_model_backend(model, backend)
        torch.manual_seed(1)
        with torch.no_grad():
            outs.append(model(x))
    torch.testing.assert_close(outs[0], outs[1], atol=1e-5, rtol=1e-5)
    if "drop_path_rate" in kw:
        assert not fused.inactive(model.blocks[-1].drop_path2, True)


def test_qat_model_runs_its_own_path():
    model = vitfast.create_model("vit_tiny_patch16_224", img_size=32, depth=1, num_classes=10).eval()
    q = vitfast.quant.prepare_qat(copy.deepcopy(model), "FP16_16")
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        set_model_backend(q, "eager")
        a = q(x)
        set_model_backend(q, "vitfast")
        b = q(x)
    assert torch.equal(a, b)


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("name", list(CASES))
def test_cuda_vitfast_backend_within_2x_of_eager_at_16bit(name, dtype):
    torch.manual_seed(0)
    kw = dict(CASES[name], img_size=224 if name != "dvt_t2t_vit_14" else 64)
    model = vitfast.create_model(name, **kw).train().cuda()
    ref_out, ref_grads = run(copy.deepcopy(model).double(), torch.randn(2, 3, kw["img_size"], kw["img_size"],
                                                                        generator=torch.Generator().manual_seed(1)).cuda().double(), "eager")
    x = torch.randn(2, 3, kw["img_size"], kw["img_size"], generator=torch.Generator().manual_seed(1)).cuda()
    low = copy.deepcopy(model).to(dtype)
    eager_out, eager_grads = run(low, x.to(dtype), "sdpa")
    ours_out, ours_grads = run(low, x.to(dtype), "vitfast")
    assert_2x_torch(ours_out, eager_out, ref_out, what="forward")
    assert_2x_torch(ours_grads, eager_grads, ref_grads, what="gradients")


@pytest.mark.parametrize("train", [False, True])
def test_torch_compile_traces_every_fused_op_without_a_graph_break(train):
    """fullgraph=True fails on any graph break; the graph holds each block's custom ops: two
    layer_norm (the second fused with the residual add), attention, the projection's and fc2's
    linear_residual, fc1's linear_gelu. In training the ops' backward formulas are traced too."""
    torch.manual_seed(0)
    model = vitfast.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=2, num_classes=5)
    set_model_backend(model, "vitfast").train(train)
    seen = []

    def count(gm, example_inputs):
        seen.extend(str(n.target).split(".")[1] for n in gm.graph.nodes
                    if n.op == "call_function" and str(n.target).startswith("vitfast."))
        return gm

    x = torch.randn(2, 3, 32, 32)
    with torch.set_grad_enabled(train):
        out = torch.compile(model, backend=count, fullgraph=True)(x)
        ref = model(x)
    torch.testing.assert_close(out, ref)
    per_block = {"layer_norm": 2, "attention_fwd": 1, "linear_residual": 2, "linear_gelu": 1}
    assert {op: seen.count(op) for op in set(seen)} == {op: 2 * n for op, n in per_block.items()}, seen
    if train:
        out.float().square().sum().backward()  # through the traced autograd formulas
        assert model.blocks[0].mlp.fc1.weight.grad is not None


def test_vitfast_backend_compiles_with_its_gradients():
    """The custom ops' shape functions and autograd formulas carry a whole model through torch.compile."""
    torch.manual_seed(0)
    model = vitfast.create_model("vit_tiny_patch16_224", img_size=32, depth=1, num_classes=10)
    set_model_backend(model, "vitfast")
    x = torch.randn(2, 3, 32, 32)
    ref = model(x)
    ref.sum().backward()
    want = model.blocks[0].mlp.fc1.weight.grad.clone()
    model.zero_grad()
    out = torch.compile(model, backend="aot_eager")(x)
    out.sum().backward()
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(model.blocks[0].mlp.fc1.weight.grad, want)
