"""Google's ViT .npz checkpoints: files in Google's layout (built here with numpy from a timm model,
independently of save_npz, and checked with timm's own loader) load into vitfast and match timm;
save_npz writes that same layout, which timm's loader reads back; position embeddings are resampled,
heads left fresh where the classes differ or a pre_logits layer is present; bad files say what is wrong."""
import os
import warnings

import numpy as np
import pytest
import timm
import torch
from timm.models.vision_transformer import _load_weights as timm_load_npz

import vitfast
import vitfast.models.vision_transformer_hybrid  # noqa: F401  (registers the hybrids)
from vitfast.layers import resample_abs_pos_embed
from vitfast.models import load_state_dict
from vitfast.models.npz import NpzMismatchError, load_npz, save_npz

# name: overrides, small where the layout does not care (depth, width, image size)
LAYOUTS = {
    "vit_base_patch32_224": dict(depth=2, img_size=64),  # ViT-B/32 widths, two blocks
    "vit_base_r50_s16_224": dict(depth=2, img_size=64, embed_dim=192, num_heads=3),  # full R50, small ViT
}


def assert_close_to_scale(a, b):
    scale = b.abs().max().item()
    assert (a - b).abs().max().item() <= 1e-5 * scale, ((a - b).abs().max().item(), scale)


def google_arrays(ref, pre_logits=False):
    """Google's .npz layout of timm model `ref`, written the way jeonsworld's ViT-pytorch reads it
    (its np2th and .view(D, D).t() steps run backwards): kernels input-major, convs HWIO, attention
    kernels (D, heads, hd) / (heads, hd, D), GroupNorm parameters (1, 1, 1, C)."""
    sd = {k: v.detach().numpy() for k, v in ref.state_dict().items()}
    g = {}

    def conv(key, name):
        g[key] = sd[name].transpose(2, 3, 1, 0)  # OIHW -> HWIO

    def dense(key, name):
        g[key + "/kernel"], g[key + "/bias"] = sd[name + ".weight"].T, sd[name + ".bias"]

    def norm(key, name, group=False):
        shape = (1, 1, 1, -1) if group else (-1,)
        g[key + "/scale"], g[key + "/bias"] = sd[name + ".weight"].reshape(shape), sd[name + ".bias"].reshape(shape)

    if hasattr(ref.patch_embed, "backbone"):
        conv("conv_root/kernel", "patch_embed.backbone.stem.conv.weight")
        norm("gn_root", "patch_embed.backbone.stem.norm", group=True)
        for s, stage in enumerate(ref.patch_embed.backbone.stages):
            for u, _ in enumerate(stage.blocks):
                p, b = f"patch_embed.backbone.stages.{s}.blocks.{u}.", f"block{s + 1}/unit{u + 1}/"
                for r in (1, 2, 3):
                    conv(f"{b}conv{r}/kernel", f"{p}conv{r}.weight")
                    norm(f"{b}gn{r}", f"{p}norm{r}", group=True)
                if u == 0:
                    conv(f"{b}conv_proj/kernel", f"{p}downsample.conv.weight")
                    norm(f"{b}gn_proj", f"{p}downsample.norm", group=True)
    conv("embedding/kernel", "patch_embed.proj.weight")
    g["embedding/bias"] = sd["patch_embed.proj.bias"]
    g["cls"] = sd["cls_token"]
    g["Transformer/posembed_input/pos_embedding"] = sd["pos_embed"]
    dim = ref.embed_dim
    for i, block in enumerate(ref.blocks):
        heads = block.attn.num_heads
        p, b = f"blocks.{i}.", f"Transformer/encoderblock_{i}/"
        mha = b + "MultiHeadDotProductAttention_1/"
        for n, w, bias in zip(("query", "key", "value"), np.split(sd[p + "attn.qkv.weight"], 3),
                              np.split(sd[p + "attn.qkv.bias"], 3)):
            g[f"{mha}{n}/kernel"] = w.T.reshape(dim, heads, dim // heads)
            g[f"{mha}{n}/bias"] = bias.reshape(heads, dim // heads)
        g[mha + "out/kernel"] = sd[p + "attn.proj.weight"].T.reshape(heads, dim // heads, dim)
        g[mha + "out/bias"] = sd[p + "attn.proj.bias"]
        norm(b + "LayerNorm_0", p + "norm1")
        norm(b + "LayerNorm_2", p + "norm2")
        dense(b + "MlpBlock_3/Dense_0", p + "mlp.fc1")
        dense(b + "MlpBlock_3/Dense_1", p + "mlp.fc2")
    norm("Transformer/encoder_norm", "norm")
    dense("head", "head")
    if pre_logits:  # imagenet21k files: the representation layer between the class token and the head
        rng = np.random.default_rng(0)
        g["pre_logits/kernel"] = rng.standard_normal((dim, dim), dtype=np.float32)
        g["pre_logits/bias"] = np.zeros(dim, np.float32)
    return g


def write(path, arrays):
    np.savez(path, **{k: np.ascontiguousarray(v, dtype=np.float32) for k, v in arrays.items()})
    return path


def randomized_timm(name, seed=0, **kw):
    torch.manual_seed(seed)
    ref = timm.create_model(name, pretrained=False, num_classes=kw.pop("num_classes", 1000), **kw).eval()
    with torch.no_grad():
        for p in ref.parameters():
            if p.ndim == 1:  # norms and biases off their 1/0 init, so any mix-up shows
                p.add_(torch.randn_like(p) * 0.1)
    return ref


@pytest.fixture(scope="module", params=list(LAYOUTS))
def google(request, tmp_path_factory):
    """(name, overrides, timm model, path of its weights in Google's layout)."""
    name, kw = request.param, LAYOUTS[request.param]
    ref = randomized_timm(name, **kw)
    path = write(tmp_path_factory.mktemp("npz") / f"{name}.npz", google_arrays(ref))
    return name, kw, ref, path


def images(kw, n=2):
    return torch.randn(n, 3, kw["img_size"], kw["img_size"], generator=torch.Generator().manual_seed(3))


def test_our_google_layout_is_googles(google):
    """The test's own file builder agrees with timm's reference loader (so it can judge load_npz)."""
    name, kw, ref, path = google
    other = randomized_timm(name, seed=1, **kw)
    timm_load_npz(other, str(path))
    for k, v in ref.state_dict().items():
        assert torch.equal(other.state_dict()[k], v), k


def test_load_npz_matches_timm(google):
    name, kw, ref, path = google
    ours = vitfast.create_model(name, **kw).eval()
    result = load_npz(ours, path)
    assert not any(result), result
    for k, v in ref.state_dict().items():
        assert torch.equal(ours.state_dict()[k], v), k
    x = images(kw)
    with torch.no_grad():
        assert_close_to_scale(ours(x), ref(x))


def test_save_npz_writes_googles_layout_and_timm_reads_it(google, tmp_path):
    name, kw, ref, path = google
    ours = vitfast.create_model(name, **kw).eval()
    load_state_dict(ours, ref.state_dict())
    save_npz(ours, tmp_path / "ours.npz")
    assert os.listdir(tmp_path) == ["ours.npz"]  # atomic: no temporary file left behind
    with np.load(path) as theirs, np.load(tmp_path / "ours.npz") as saved:
        assert sorted(saved.files) == sorted(theirs.files)
        for k in theirs.files:
            assert saved[k].dtype == np.float32 and np.array_equal(saved[k], theirs[k]), k
    back = randomized_timm(name, seed=2, **kw)
    timm_load_npz(back, str(tmp_path / "ours.npz"))
    x = images(kw)
    with torch.no_grad():
        assert torch.equal(back(x), ref(x))
    again = vitfast.create_model(name, **kw)
    load_npz(again, tmp_path / "ours.npz")
    assert all(torch.equal(again.state_dict()[k], v) for k, v in ours.state_dict().items())


def test_create_model_with_npz_checkpoint(google):
    name, kw, ref, path = google
    ours = vitfast.create_model(name, checkpoint_path=str(path), **kw)
    assert all(torch.equal(ours.state_dict()[k], v) for k, v in ref.state_dict().items())


@pytest.mark.parametrize("name,kw", [
    ("vit_tiny_patch16_224", dict(depth=1)),
    ("vit_base_r50_s16_224", dict(depth=1, embed_dim=192, num_heads=3)),
])
def test_position_embedding_resampled_224_to_384(name, kw, tmp_path):
    torch.manual_seed(0)
    ref = vitfast.create_model(name, **kw)  # same names and structure as timm's (cheaper to build at 224)
    path = write(tmp_path / "224.npz", google_arrays(ref))
    ours = vitfast.create_model(name.replace("224", "384"), **kw)
    result = load_npz(ours, path)
    assert result.resized_keys == ["pos_embed"] and not result.mismatched_keys
    assert ours.pos_embed.shape[1] == 1 + 24 * 24
    assert torch.equal(ours.pos_embed, resample_abs_pos_embed(ref.pos_embed.detach(), (24, 24)))
    assert torch.equal(ours.blocks[0].attn.qkv.weight, ref.blocks[0].attn.qkv.weight)


def test_fresh_head_when_classes_differ(arrays, tmp_path):
    path = write(tmp_path / "in1k.npz", arrays)
    ours = vitfast.create_model("vit_tiny_patch16_224", depth=2, img_size=32, num_classes=7)
    head = ours.head.weight.clone()
    with pytest.warns(UserWarning, match="1000 classes, the model's 7"):
        result = load_npz(ours, path)
    assert result.fresh_keys == ["head.weight", "head.bias"] and torch.equal(ours.head.weight, head)
    assert set(result.ignored_keys) == {"head/kernel", "head/bias"}
    assert torch.equal(ours.cls_token, torch.from_numpy(arrays["cls"]))
    headless = vitfast.create_model("vit_tiny_patch16_224", depth=2, img_size=32, num_classes=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to say: there is no head to leave fresh
        assert load_npz(headless, path).ignored_keys == ["head/bias", "head/kernel"]


def test_imagenet21k_pre_logits_not_loaded_and_head_left_fresh(tmp_path):
    name, kw = "vit_base_patch32_224", dict(depth=1, img_size=64)
    ref = randomized_timm(name, **kw)
    path = write(tmp_path / "in21k.npz", google_arrays(ref, pre_logits=True))
    ours = vitfast.create_model(name, **kw).eval()  # same class count as the file: still not the same head
    with pytest.warns(UserWarning, match="pre_logits"):
        result = load_npz(ours, path)
    assert result.ignored_keys == ["head/bias", "head/kernel", "pre_logits/bias", "pre_logits/kernel"]
    assert result.fresh_keys == ["head.weight", "head.bias"]
    x = images(kw, 1)
    with torch.no_grad():  # the encoder is the checkpoint's
        assert_close_to_scale(ours.forward_head(ours.forward_features(x), pre_logits=True),
                              ref.forward_head(ref.forward_features(x), pre_logits=True))


def test_opt_target_prefix(tmp_path):
    ref = randomized_timm("vit_tiny_patch16_224", depth=1, img_size=32)
    arrays = {f"opt/target/{k}": v for k, v in google_arrays(ref).items()}
    path = write(tmp_path / "prefixed.npz", arrays)
    ours = vitfast.create_model("vit_tiny_patch16_224", depth=1, img_size=32)
    load_npz(ours, path)
    assert torch.equal(ours.pos_embed, ref.pos_embed)


@pytest.fixture(scope="module")
def arrays():
    return google_arrays(randomized_timm("vit_tiny_patch16_224", depth=2, img_size=32))


class TestBadFiles:

    def model(self):
        return vitfast.create_model("vit_tiny_patch16_224", depth=2, img_size=32)

    def test_every_problem_named_at_once(self, arrays, tmp_path):
        bad = dict(arrays)
        del bad["Transformer/encoderblock_1/LayerNorm_2/scale"], bad["cls"]
        bad["Transformer/encoderblock_0/MlpBlock_3/Dense_0/kernel"] = np.zeros((192, 700), np.float32)
        bad["Transformer/encoderblock_2/LayerNorm_0/scale"] = np.ones(192, np.float32)  # a deeper model's
        model = self.model()
        before = {k: v.clone() for k, v in model.state_dict().items()}
        with pytest.raises(NpzMismatchError) as e:
            load_npz(model, write(tmp_path / "bad.npz", bad))
        msg = str(e.value)
        for key in ("Transformer/encoderblock_1/LayerNorm_2/scale", "cls",
                    "Transformer/encoderblock_0/MlpBlock_3/Dense_0/kernel", "(192, 700)", "(192, 768)",
                    "Transformer/encoderblock_2/LayerNorm_0/scale"):
            assert key in msg, (key, msg)
        assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())  # nothing half-loaded
        result = load_npz(model, tmp_path / "bad.npz", strict=False)
        assert result.missing_keys == ["Transformer/encoderblock_1/LayerNorm_2/scale", "cls"]
        assert torch.equal(model.blocks[1].attn.qkv.bias[:192].reshape(3, -1),
                           torch.from_numpy(arrays["Transformer/encoderblock_1/MultiHeadDotProductAttention_1/"
                                                   "query/bias"]))

    def test_not_a_google_checkpoint(self, arrays, tmp_path):
        model = self.model()
        with pytest.raises(FileNotFoundError):
            load_npz(model, tmp_path / "absent.npz")
        (tmp_path / "text.npz").write_text("not an archive")
        with pytest.raises(ValueError, match="not a readable .npz"):
            load_npz(model, tmp_path / "text.npz")
        with pytest.raises(ValueError, match="embedding/kernel"):
            load_npz(model, write(tmp_path / "other.npz", {"weights": np.zeros(3)}))
        torch.save(model.state_dict(), tmp_path / "torch.npz")  # a zip too, but not Google's
        with pytest.raises(ValueError, match="embedding/kernel"):
            load_npz(model, tmp_path / "torch.npz")
        big_vision = {("pos_embedding" if "posembed" in k else k): v for k, v in arrays.items()}
        with pytest.raises(ValueError, match="big_vision"):
            load_npz(model, write(tmp_path / "big_vision.npz", big_vision))

    def test_models_the_layout_cannot_hold(self, tmp_path):
        distilled = vitfast.create_model("deit_tiny_distilled_patch16_224", depth=1, img_size=32)
        with pytest.raises(ValueError, match="dist_token"):
            save_npz(distilled, tmp_path / "x.npz")
        assert not os.listdir(tmp_path)
