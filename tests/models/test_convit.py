"""ConViT against timm.models.convit: same parameter names and counts, state dicts interchangeable with
strict=True, outputs equal in fp32 (max |ours − timm| ≤ 1e-5 · max |timm|) with our eager and SDPA
backends in eval and train mode, gradients equal, and input errors that say what was expected.

CPU time is the constraint (convit_base is 17 GMACs per image): each model pair is built once per
module, and our four eval/train × eager/sdpa outputs are compared with one timm forward in eval mode,
which is what timm computes in train mode too when every dropout and drop-path rate is zero (checked
on convit_tiny and convit_small; skipped on convit_base to save a forward)."""
import pytest
import torch

timm = pytest.importorskip("timm")

from vitfast.layers import set_model_backend  # noqa: E402
from vitfast.models import count_macs, count_params, create_model, get_model_config, list_models  # noqa: E402
from vitfast.models import load_checkpoint  # noqa: E402
from vitfast.models.convit import GPSA, MHSA, ConVit, relative_positions  # noqa: E402

NAMES = ["convit_tiny", "convit_small", "convit_base"]
HEADS = {"convit_tiny": 4, "convit_small": 9, "convit_base": 16}
BATCH = 2
RTOL = 1e-5


def assert_close(ours, ref, rtol=RTOL, what="output"):
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    err, scale = (ours - ref).abs().max().item(), ref.abs().max().item()
    assert err <= rtol * scale, f"{what}: max abs diff {err:.3e} > {rtol} x max |ref| ({scale:.3e})"


def timm_reference(name, **kwargs):
    """timm's random init, with the gates and positional biases perturbed so that every head mixes
    content and position differently (at init all gates are 1 and biases 0)."""
    torch.manual_seed(0)
    ref = timm.create_model(name, **kwargs)
    with torch.no_grad():
        for m in ref.modules():
            if hasattr(m, "gating_param"):
                m.gating_param.normal_(0.0, 2.0)
                m.pos_proj.bias.normal_(0.0, 1.0)
    return ref.eval()


@pytest.fixture(scope="module", params=NAMES)
def pair(request):
    """(name, timm model, our model with timm's weights loaded strictly, a fixed input, timm's eval output)."""
    name = request.param
    ref = timm_reference(name)
    ours = create_model(name)
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(BATCH, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = ref(x)
    yield name, ref, ours.eval(), x, out


def run(model, x, mode, backend=None):
    model.train(mode == "train")
    if backend is not None:
        set_model_backend(model, backend)
    with torch.no_grad():
        return model(x)


# --- parity with timm -------------------------------------------------------------------------------

def test_outputs_match_timm(pair):
    name, ref, ours, x, ref_out = pair
    if name != "convit_base":
        ref_train = run(ref, x, "train")
        ref.eval()
        assert torch.equal(ref_train, ref_out), "timm's train and eval outputs differ with all drop rates at zero"
    for mode, backend in [("eval", "eager"), ("eval", "sdpa"), ("train", "eager"), ("train", "sdpa")]:
        assert_close(run(ours, x, mode, backend), ref_out, what=f"{name} {mode} {backend}")
    ours.eval()


def test_param_counts_equal_timm(pair):
    name, ref, ours, *_ = pair
    assert count_params(ours) == count_params(ref)
    assert list(dict(ours.named_parameters())) == list(dict(ref.named_parameters()))
    assert ours.state_dict().keys() == ref.state_dict().keys()


def test_our_state_dict_loads_into_timm(pair):
    name, ref, ours, *_ = pair
    ref.load_state_dict(ours.state_dict(), strict=True)  # the same values: only names and shapes are tested


def test_fresh_weights_round_trip_through_timm():
    ours = create_model("convit_tiny").eval()
    ref = timm.create_model("convit_tiny").eval()
    ref.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(BATCH, 3, 224, 224)
    with torch.no_grad():
        assert_close(ours(x), ref(x))


def test_gradients_match_timm():
    # 112x112 (7x7 patches): the same computation as at 224, a quarter of the cost.
    ref = timm_reference("convit_tiny", img_size=112).train()
    x = torch.randn(BATCH, 3, 112, 112, generator=torch.Generator().manual_seed(2))
    w = torch.randn(BATCH, 1000, generator=torch.Generator().manual_seed(3))
    (ref(x) * w).sum().backward()
    ref_grads = {n: p.grad for n, p in ref.named_parameters()}
    floor = max(g.abs().max().item() for g in ref_grads.values())
    for backend in ("eager", "sdpa"):
        ours = create_model("convit_tiny", img_size=112, backend=backend).train()
        ours.load_state_dict(ref.state_dict(), strict=True)
        (ours(x) * w).sum().backward()
        for n, p in ours.named_parameters():
            # pos_proj.bias shifts every positional logit of a head equally, which softmax ignores: its
            # true gradient is 0 and both sides hold rounding noise, hence the floor of 1e-6 x max grad.
            err = (p.grad - ref_grads[n]).abs().max().item()
            assert err <= 1e-4 * ref_grads[n].abs().max().item() + 1e-6 * floor, f"{backend}: grad of {n}: {err:.3e}"
        gates = [b.attn.gating_param.grad for b in ours.blocks[:10]]
        assert all(g.abs().min() > 0 for g in gates), "every GPSA gate must receive a gradient"


def test_gpsa_local_init_and_relative_positions_match_timm():
    from timm.models.convit import GPSA as TimmGPSA

    for heads in (4, 9, 16):
        theirs, ours = TimmGPSA(48 * heads, heads), GPSA(48 * heads, heads, grid_size=5)
        theirs.local_init()
        ours.local_init()
        assert torch.equal(ours.pos_proj.weight, theirs.pos_proj.weight)
        assert torch.equal(ours.v.weight, torch.eye(48 * heads))
        assert torch.equal(ours.rel_indices, theirs.get_rel_indices(25))
    # At local init each head's positional attention peaks at its own offset of a sqrt(H) x sqrt(H) kernel.
    gpsa = GPSA(48 * 9, 9, grid_size=7)
    gpsa.local_init()
    peaks = gpsa.positional_attention(49)[0, :, 24].argmax(dim=-1)  # query: the centre patch (3, 3)
    expected = [(3 + h1 - 1) * 7 + (3 + h2 - 1) for h2 in range(3) for h1 in range(3)]
    assert peaks.tolist() == expected


def test_gpsa_nonlocality_matches_timm():
    from timm.models.convit import GPSA as TimmGPSA

    theirs, ours = TimmGPSA(96, 4).eval(), GPSA(96, 4, grid_size=6).eval()
    theirs.local_init()
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(BATCH, 36, 96)
    theirs(x)  # timm builds its relative-position table on the first call
    with torch.no_grad():
        d_ours, map_ours = ours.get_attention_map(x, return_map=True)
        d_theirs, map_theirs = theirs.get_attention_map(x, return_map=True)
    assert_close(d_ours, d_theirs)
    assert_close(map_ours, map_theirs)


# --- training ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_forward_backward_small_batch_reaches_every_parameter(name):
    # Full width and heads of each variant; 64x64 input and 3 blocks (2 GPSA + 1 MHSA) keep it cheap.
    model = create_model(name, img_size=64, depth=3, local_up_to_layer=2, num_classes=10, drop_path_rate=0.1).train()
    model(torch.randn(BATCH, 3, 64, 64)).logsumexp(dim=-1).mean().backward()
    for n, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), n
    for blk in model.blocks[:2]:
        assert isinstance(blk.attn, GPSA) and blk.attn.gating_param.grad.abs().min() > 0
    assert isinstance(model.blocks[2].attn, MHSA)


def test_attention_dropout_takes_the_explicit_path_in_training():
    model = create_model("convit_tiny", img_size=64, depth=3, local_up_to_layer=2, attn_drop_rate=0.5,
                         backend="sdpa")
    x = torch.randn(BATCH, 3, 64, 64)
    torch.manual_seed(0)
    a = model.train()(x)
    torch.manual_seed(1)
    assert not torch.allclose(a, model(x))  # dropout is live
    with torch.no_grad():
        plain = model.eval()(x)
        set_model_backend(model, "eager")
        assert_close(plain, model(x))


def test_no_weight_decay_names_exist():
    model = create_model("convit_tiny", img_size=64)
    names = dict(model.named_parameters())
    skip = model.no_weight_decay()
    assert {"pos_embed", "cls_token"} <= skip and skip <= set(names)
    assert sum(n.endswith("gating_param") for n in skip) == 10


# --- backends, registry, configuration --------------------------------------------------------------

def test_registry_and_configs():
    assert list_models("convit*") == sorted(NAMES)
    cfg = get_model_config("convit_small")
    assert cfg["input_size"] == (3, 224, 224) and cfg["crop_pct"] == 0.875 and cfg["mean"] == (0.485, 0.456, 0.406)
    for name in NAMES:
        model = create_model(name, img_size=32, depth=2, local_up_to_layer=1)  # widths and heads only
        assert model.embed_dim == 48 * HEADS[name] and model.blocks[0].attn.num_heads == HEADS[name]
    model = create_model("convit_tiny", img_size=32)
    assert [isinstance(b.attn, GPSA) for b in model.blocks] == [True] * 10 + [False] * 2
    with torch.device("meta"):
        assert create_model("convit_base").blocks[0].attn.rel_indices.shape == (1, 196, 196, 3)


def test_set_model_backend_reaches_every_attention():
    model = create_model("convit_tiny", img_size=64, backend="eager")
    attns = [b.attn for b in model.blocks]
    assert all(a.backend == "eager" for a in attns)
    set_model_backend(model, "sdpa")
    assert all(a.backend == "sdpa" for a in attns)
    set_model_backend(model, None)
    assert all(a.backend is None for a in attns)
    with pytest.raises(ValueError, match="backend must be one of"):
        set_model_backend(model, "flash")


def test_return_attn_gives_probabilities_of_every_block():
    model = create_model("convit_tiny", img_size=64, backend="sdpa").eval()
    x = torch.randn(BATCH, 3, 64, 64)
    with torch.no_grad():
        feats, attns = model.forward_features(x, return_attn="probs")
        assert_close(feats, model.forward_features(x))
    assert [a.shape for a in attns] == [(BATCH, 4, 16, 16)] * 10 + [(BATCH, 4, 17, 17)] * 2
    for a in attns:
        assert torch.allclose(a.sum(-1), torch.ones(()), atol=1e-5)
    with pytest.raises(ValueError, match="return_attn must be None or 'probs'"):
        model.forward_features(x, return_attn="logits")


def test_non_square_grid_and_relative_positions():
    rel = relative_positions((2, 3))[0]
    # token 4 = row 1, col 1; token 2 = row 0, col 2: dx = +1, dy = -1.
    assert rel[4, 2].tolist() == [1.0, -1.0, 2.0]
    model = create_model("convit_tiny", img_size=(48, 80), num_classes=5).eval()
    assert model.blocks[0].attn.rel_indices.shape == (1, 15, 15, 3)
    x = torch.randn(BATCH, 3, 48, 80)
    with torch.no_grad():
        a = run(model, x, "eval", "eager")
        assert_close(run(model, x, "eval", "sdpa"), a)
    assert a.shape == (BATCH, 5)


def test_dtype_and_pooling_options():
    model = create_model("convit_tiny", img_size=64, depth=3, local_up_to_layer=2, global_pool="avg",
                         num_classes=0).double().eval()
    assert model.blocks[0].attn.rel_indices.dtype == torch.float64
    out = model(torch.randn(BATCH, 3, 64, 64, dtype=torch.float64))
    assert out.shape == (BATCH, 192) and out.dtype == torch.float64
    model.reset_classifier(7, global_pool="token")
    assert model(torch.randn(1, 3, 64, 64, dtype=torch.float64)).shape == (1, 7)
    assert model.head.weight.dtype == torch.float64
    all_gpsa = create_model("convit_tiny", img_size=64, depth=2, local_up_to_layer=2, global_pool="avg")
    assert all_gpsa.num_prefix_tokens == 0
    assert all_gpsa.forward_features(torch.randn(1, 3, 64, 64)).shape == (1, 16, 192)


def test_macs_close_to_the_paper():
    # The paper: ConViT-Ti 1.0 GFLOPs (MACs) without the attention products, which count_macs includes.
    assert 1.0e9 <= count_macs(create_model("convit_tiny")) <= 1.4e9


def test_act_quant_hooks_round_the_attention_core_on_the_explicit_path():
    model = create_model("convit_tiny", img_size=64, depth=3, local_up_to_layer=2).eval()
    x = torch.randn(BATCH, 3, 64, 64)
    hooked = [m for m in model.modules() if hasattr(m, "act_quant")]
    assert {type(m).__name__ for m in hooked} >= {"ConVit", "Block", "GPSA", "MHSA", "Mlp"}
    with torch.no_grad():
        plain = run(model, x, "eval", "sdpa")
        calls = []

        def fp16(t):
            calls.append(t.shape)
            return t.half().float()

        for m in hooked:
            m.act_quant = fp16
        by_sdpa = run(model, x, "eval", "sdpa")
        n_sdpa = len(calls)
        by_eager = run(model, x, "eval", "eager")
    assert torch.equal(by_sdpa, by_eager)  # a hook forces the explicit attention path on every backend
    assert n_sdpa == len(calls) - n_sdpa > 0
    assert not torch.equal(by_sdpa, plain)
    assert_close(by_sdpa, plain, rtol=1e-2)


def test_prepare_qat_covers_convit():
    qat = pytest.importorskip("vitfast.quant.qat")
    model = create_model("convit_tiny", img_size=64, depth=3, local_up_to_layer=2).eval()
    x = torch.randn(BATCH, 3, 64, 64)
    with torch.no_grad():
        plain = model(x)
        qat.prepare_qat(model, "FP16_16")
        rounded = model(x)
    assert all(m.act_quant is not None for m in model.modules() if hasattr(m, "act_quant"))
    assert not torch.equal(rounded, plain)
    assert_close(rounded, plain, rtol=1e-2)


# --- errors -----------------------------------------------------------------------------------------

def test_bad_inputs_name_the_expectation():
    model = create_model("convit_tiny", img_size=64)
    with pytest.raises(ValueError, match="ConVit expects 3 input channels, got 1"):
        model(torch.randn(BATCH, 1, 64, 64))
    with pytest.raises(ValueError, match="ConVit expects 64x64 images, got 96x64"):
        model(torch.randn(BATCH, 3, 96, 64))
    with pytest.raises(ValueError, match=r"expects images as a \(batch, 3, height, width\) tensor"):
        model(torch.randn(3, 64, 64))


def test_bad_configurations():
    with pytest.raises(ValueError, match="does not take the override 'img_sz'.*did you mean 'img_size'"):
        create_model("convit_tiny", img_sz=64)
    with pytest.raises(ValueError, match="local_up_to_layer must be in"):
        create_model("convit_tiny", img_size=64, local_up_to_layer=13)
    with pytest.raises(ValueError, match="class token never joins"):
        create_model("convit_tiny", img_size=64, local_up_to_layer=12)
    with pytest.raises(ValueError, match="global_pool must be"):
        create_model("convit_tiny", img_size=64, global_pool="max")
    with pytest.raises(ValueError, match="divisible by num_heads"):
        create_model("convit_tiny", img_size=64, num_heads=5)
    with pytest.raises(ValueError, match="built for a 4x4 patch grid"):
        create_model("convit_tiny", img_size=64).blocks[0].attn(torch.randn(1, 25, 192))


# --- checkpoints ------------------------------------------------------------------------------------

def test_checkpoint_filter_unwraps_strips_and_resamples(tmp_path):
    ref = timm_reference("convit_tiny")
    wrapped = {"model": {"module." + k: v for k, v in ref.state_dict().items()}, "epoch": 299}
    ours = create_model("convit_tiny")
    ours.load_state_dict(ConVit.checkpoint_filter_fn(wrapped, ours), strict=True)
    assert torch.equal(ours.pos_embed, ref.pos_embed)
    # A training checkpoint on disk (the official layout: flat timm names, or wrapped in 'model').
    path = tmp_path / "convit_tiny.pth"
    torch.save(wrapped, path)
    smaller = create_model("convit_tiny", img_size=112, checkpoint_path=path)
    assert smaller.pos_embed.shape == (1, 49, 192)
    assert torch.equal(smaller.blocks[3].attn.gating_param, ref.blocks[3].attn.gating_param)
    load_checkpoint(ours, path)
