"""T2T-ViT: parameter counts and MACs against the paper, the official checkpoint layout, the T2T
layers against their formulas, forward/backward, attention maps, backends, bad input, torch.compile.

The official code is not available in CI. By hand, against github.com/yitu-opensource/T2T-ViT at
0f63dc9 with the same weights and 4 random 224x224 images, eval mode: t2t_vit_7, t2t_vit_14,
t2t_vit_t_14 and t2t_vit_24 logits were bit-identical with the eager backend (max |diff| 0.0) and
within 1.0e-6 with SDPA."""
import math

import numpy as np
import pytest
import torch

import vitfast
from vitfast.layers import set_model_backend
from vitfast.models import count_macs, count_params
from vitfast.models import t2t_vit  # noqa: F401  (registers the models)
from vitfast.models.t2t_vit import T2TViT, TokenAttention, TokenPerformer

@pytest.fixture(autouse=True, scope="module")
def one_intra_op_thread():
    """These tensors are tiny: one intra-op thread runs them as fast, and keeps a loaded CI machine from
    stalling on thread barriers (observed: 0.3 s -> 17 s per test at load 8 on 2 cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# name: (params of the official model, paper/README params in M, published GMACs at 224 or None)
PUBLISHED = {
    "t2t_vit_7": (4310222, 4.3, None), "t2t_vit_10": (5889230, 5.9, 1.53), "t2t_vit_12": (6941902, 6.9, 1.78),
    "t2t_vit_14": (21545550, 21.5, 4.80), "t2t_vit_19": (39177422, 39.2, 8.50),
    "t2t_vit_24": (64105934, 64.1, 13.69), "t2t_vit_t_14": (21541070, 21.5, 6.1),
    "t2t_vit_t_19": (39172942, 39.2, 9.8), "t2t_vit_t_24": (64101454, 64.1, 15.0),
}


def full_size_on_meta(name):
    with torch.device("meta"):
        return vitfast.create_model(name)


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_parameter_count_is_the_papers(name):
    exact, paper_m, _ = PUBLISHED[name]
    n = count_params(full_size_on_meta(name))
    # The published counts include the two fixed tensors (pos_embed, the performer's w), as the
    # official main.py counts them: without them T2T-ViT-10 would be 5.8M, not 5.9M.
    assert n == exact
    assert round(n / 1e6, 1) == paper_m


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_macs_match_the_published_figures(name):
    macs = count_macs(full_size_on_meta(name), 224) / 1e9
    published = PUBLISHED[name][2]
    if published is None:
        # T2T-ViT-7: the README prints 1.1G; we count 1.147G (the official model counted the same way
        # gives the same 1.146863616G), so the figure is only met after rounding to its one decimal.
        assert round(macs, 1) == 1.1
    else:  # DVT's tables (T2T-ViT-10..24) and the T2T-ViT README (t2t_vit_t_*)
        assert abs(macs / published - 1) < 0.03, (macs, published)


def official_keys(depth, tokens_type="performer"):
    """The official T2T_ViT's state-dict names (from its t2t_vit.py / token_performer.py /
    token_transformer.py / transformer_block.py)."""
    wb = ("weight", "bias")
    if tokens_type == "performer":
        layer = [f"{m}.{p}" for m in ("kqv", "proj", "norm1", "norm2", "mlp.0", "mlp.2") for p in wb] + ["w"]
    else:
        layer = ["attn.qkv.weight"] + [f"{m}.{p}" for m in ("norm1", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2")
                                       for p in wb]
    block = ["attn.qkv.weight"] + [f"{m}.{p}" for m in ("norm1", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2")
                                   for p in wb]
    keys = {f"tokens_to_token.attention{i}.{k}" for i in (1, 2) for k in layer}
    keys |= {f"blocks.{i}.{k}" for i in range(depth) for k in block}
    keys |= {"tokens_to_token.project.weight", "tokens_to_token.project.bias", "cls_token", "pos_embed",
             "norm.weight", "norm.bias", "head.weight", "head.bias"}
    return keys


def to_official_layout(state_dict):
    """Inverse of checkpoint_filter_fn's key mapping: our names are the official ones, so a timm-saved
    official training checkpoint is them under "state_dict" with DataParallel's "module." prefix."""
    return {"epoch": 309, "arch": "t2t_vit_7", "state_dict": {f"module.{k}": v for k, v in state_dict.items()}}


@pytest.mark.parametrize("name,tokens_type", [("t2t_vit_7", "performer"), ("t2t_vit_t_14", "transformer")])
def test_state_dict_has_the_official_names_and_shapes(name, tokens_type):
    m = full_size_on_meta(name)
    sd = m.state_dict()
    assert set(sd) == official_keys(len(m.blocks), tokens_type)
    dim, c0 = m.embed_dim, 3 * 7 * 7
    shapes = {"pos_embed": (1, 197, dim), "cls_token": (1, 1, dim), "tokens_to_token.project.weight": (dim, 576),
              "blocks.0.attn.qkv.weight": (3 * dim, dim)}
    if tokens_type == "performer":
        shapes.update({"tokens_to_token.attention1.kqv.weight": (192, c0), "tokens_to_token.attention1.w": (32, 64),
                       "tokens_to_token.attention2.kqv.weight": (192, 576)})
    else:
        shapes.update({"tokens_to_token.attention1.attn.qkv.weight": (192, c0),
                       "tokens_to_token.attention2.mlp.fc1.weight": (64, 64)})
    for k, shape in shapes.items():
        assert tuple(sd[k].shape) == shape, k
    assert not m.pos_embed.requires_grad  # fixed tensors, as in the official code
    if tokens_type == "performer":
        assert not m.tokens_to_token.attention1.w.requires_grad


def test_official_checkpoint_loads_strict_and_reproduces_outputs(tmp_path):
    torch.manual_seed(0)
    src = vitfast.create_model("t2t_vit_7", img_size=64, depth=2).eval()
    path = tmp_path / "71.7_T2T_ViT_7.pth.tar"
    torch.save(to_official_layout(src.state_dict()), path)
    m = vitfast.create_model("t2t_vit_7", img_size=64, depth=2, checkpoint_path=path).eval()  # strict
    assert torch.equal(m.tokens_to_token.attention1.w, src.tokens_to_token.attention1.w)  # the fixed draw
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(m(x), src(x), rtol=0, atol=0)
    # A checkpoint for another image size: pos_embed is resampled as the official transfer code does.
    m96 = vitfast.create_model("t2t_vit_7", img_size=96, depth=2, checkpoint_path=path)
    assert m96.pos_embed.shape == (1, 1 + 6 * 6, 256)


def test_timm_training_checkpoint_with_args_loads(tmp_path):
    import argparse

    src = vitfast.create_model("t2t_vit_7", img_size=32, depth=1)
    path = tmp_path / "t2t_vit_7_train.pth.tar"
    torch.save({**to_official_layout(src.state_dict()), "args": argparse.Namespace(model="t2t_vit_7", lr=1e-3)}, path)
    vitfast.create_model("t2t_vit_7", img_size=32, depth=1, checkpoint_path=path)


def test_position_embedding_is_the_fixed_sinusoid_table():
    m = vitfast.create_model("t2t_vit_7", img_size=64, depth=1)
    n, d = m.pos_embed.shape[1:]
    angle = np.arange(n)[:, None] / np.power(10000, 2 * (np.arange(d)[None, :] // 2) / d)
    table = np.where(np.arange(d)[None, :] % 2 == 0, np.sin(angle), np.cos(angle))
    torch.testing.assert_close(m.pos_embed[0], torch.tensor(table, dtype=torch.float32), rtol=0, atol=1e-6)


def test_token_performer_is_the_random_feature_formula():
    torch.manual_seed(0)
    layer = TokenPerformer(dim=27, in_dim=16).eval()
    x = torch.randn(2, 10, 27)
    with torch.no_grad():
        h = layer.norm1(x)
        k, q, v = layer.kqv(h).split(16, dim=-1)
        w, m = layer.w, layer.m
        assert torch.allclose(w @ w.t(), m * torch.eye(m), atol=1e-4)  # scaled orthogonal rows

        def phi(u):
            return torch.exp(torch.einsum("bti,mi->btm", u, w) - (u * u).sum(-1, keepdim=True) / 2) / math.sqrt(m)

        qp, kp = phi(q), phi(k)
        y = torch.einsum("btm,bnm,bni->bti", qp, kp, v) / (torch.einsum("btm,bnm->bt", qp, kp)[..., None] + 1e-8)
        y = v + layer.proj(y)
        want = y + layer.mlp(layer.norm2(y))
        torch.testing.assert_close(layer(x), want, rtol=1e-5, atol=1e-6)


def test_token_attention_scales_by_the_input_width():
    torch.manual_seed(0)
    attn = TokenAttention(dim=147, in_dim=64, backend="eager").eval()
    x = torch.randn(2, 12, 147)
    with torch.no_grad():
        q, k, v = attn.qkv(x).split(64, dim=-1)
        p = (q @ k.transpose(1, 2) * 147**-0.5).softmax(-1)  # the official quirk: dim**-0.5, dim = 3*7*7
        torch.testing.assert_close(attn(x), v + attn.proj(p @ v), rtol=1e-5, atol=1e-6)
        set_model_backend(attn, "sdpa")
        torch.testing.assert_close(attn(x), v + attn.proj(p @ v), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["t2t_vit_7", "t2t_vit_t_14"])
def test_forward_backward_and_backends(name):
    torch.manual_seed(0)
    m = vitfast.create_model(name, img_size=64, depth=2, num_classes=7, drop_path_rate=0.1)
    x = torch.randn(2, 3, 64, 64)
    out = m.train()(x)
    assert out.shape == (2, 7)
    out.logsumexp(-1).mean().backward()
    trainable = [(n, p) for n, p in m.named_parameters() if p.requires_grad]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for _, p in trainable), \
        [n for n, p in trainable if p.grad is None or p.grad.abs().sum() == 0]
    assert {n for n, p in m.named_parameters() if not p.requires_grad} <= {"pos_embed", "tokens_to_token.attention1.w",
                                                                           "tokens_to_token.attention2.w"}
    m.eval()
    with torch.no_grad():
        outs = {}
        for backend in ("eager", "sdpa"):
            set_model_backend(m, backend)
            outs[backend] = m(x)
    torch.testing.assert_close(outs["sdpa"], outs["eager"], rtol=1e-5, atol=1e-5)


def test_attention_maps_head_and_classifier():
    torch.manual_seed(0)
    m = vitfast.create_model("t2t_vit_7", img_size=64, depth=3).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        feats = m.forward_features(x)
        f2, probs = m.forward_features(x, return_attn="probs")
        _, logits = m.forward_features(x, return_attn="logits")
    assert feats.shape == (2, 17, 256) and len(probs) == 3 and probs[0].shape == (2, 4, 17, 17)
    torch.testing.assert_close(f2, feats, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(probs[1].sum(-1), torch.ones(2, 4, 17))
    torch.testing.assert_close(logits[2].softmax(-1), probs[2])
    torch.testing.assert_close(m.forward_head(feats), m.head(feats[:, 0]))
    assert m.forward_head(feats, pre_logits=True).shape == (2, 256)
    assert m.no_weight_decay() >= {"cls_token"}
    m.reset_classifier(3)
    assert m(x).shape == (2, 3)
    m.reset_classifier(0)
    assert m(x).shape == (2, 256)


def test_overrides_are_validated():
    m = vitfast.create_model("t2t_vit_12", img_size=96, in_chans=1, num_classes=4, drop_rate=0.1,
                             attn_drop_rate=0.1, drop_path_rate=0.2, depth=2)
    assert isinstance(m, T2TViT) and m.default_cfg["input_size"] == (3, 96, 96) and m.num_classes == 4
    assert m(torch.randn(1, 1, 96, 96)).shape == (1, 4)
    with pytest.raises(ValueError, match="does not take the override 'drop_path'"):
        vitfast.create_model("t2t_vit_7", drop_path=0.1)
    with pytest.raises(ValueError, match="tokens_type must be one of"):
        vitfast.create_model("t2t_vit_7", tokens_type="convolution")
    with pytest.raises(ValueError, match="too small for the soft splits"):
        vitfast.create_model("t2t_vit_7", img_size=2)


@pytest.mark.parametrize("bad,match", [
    (torch.randn(1, 1, 64, 64), "expects 3 input channels, got 1"),
    (torch.randn(1, 3, 96, 96), "expects 64x64 images, got 96x96; create it with img_size=96"),
    (torch.randn(3, 64, 64), "expects images as a \\(batch, 3, height, width\\) tensor"),
])
def test_bad_input_is_a_value_error(bad, match):
    m = vitfast.create_model("t2t_vit_7", img_size=64, depth=1)
    with pytest.raises(ValueError, match=match):
        m(bad)


def test_torch_compile_matches_eager():
    torch.manual_seed(0)
    m = vitfast.create_model("t2t_vit_7", img_size=32, depth=1, num_classes=10).eval()
    x = torch.randn(2, 3, 32, 32)
    compiled = torch.compile(m, fullgraph=False)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), m(x), rtol=1e-5, atol=1e-5)
