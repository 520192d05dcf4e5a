"""Checkpoints: timm / official DeiT layouts, resized position embeddings, safetensors, atomic writes,
and errors that list every difference."""
import os

import pytest
import timm
import torch

import vitfast
from vitfast.models import CheckpointMismatchError, load_state_dict, save_checkpoint


def timm_model(name="deit_tiny_patch16_224", **kw):
    torch.manual_seed(0)
    return timm.create_model(name, **kw).eval()


def test_timm_pth_loads_through_create_model(tmp_path):
    ref = timm_model(depth=2)
    path = tmp_path / "timm.pth"
    torch.save(ref.state_dict(), path)
    m = vitfast.create_model("deit_tiny_patch16_224", depth=2, checkpoint_path=path).eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(m(x), ref(x), rtol=1e-5, atol=1e-5)


def test_official_deit_layout_with_wrapper_and_module_prefix(tmp_path):
    # DeiT's released .pth files hold {"model": state_dict}; DDP-saved ones prefix "module.".
    ref = timm_model("deit_tiny_distilled_patch16_224", depth=2)
    path = tmp_path / "deit_official.pth"
    torch.save({"model": {f"module.{k}": v for k, v in ref.state_dict().items()}, "epoch": 299}, path)
    m = vitfast.create_model("deit_tiny_distilled_patch16_224", depth=2, checkpoint_path=path).eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(m(x), ref(x), rtol=1e-5, atol=1e-5)


def test_position_embedding_resized_for_a_new_image_size(tmp_path):
    ref = timm_model("vit_tiny_patch16_224", depth=1)
    path = tmp_path / "vit224.pth"
    torch.save(ref.state_dict(), path)
    m = vitfast.create_model("vit_tiny_patch16_224", depth=1, img_size=384, checkpoint_path=path)
    want = timm.layers.resample_abs_pos_embed(ref.pos_embed.detach(), (24, 24), num_prefix_tokens=1)
    torch.testing.assert_close(m.pos_embed.detach(), want)
    timm_384 = timm_model("vit_tiny_patch16_224", depth=1, img_size=384)
    timm_384.load_state_dict({**ref.state_dict(), "pos_embed": want})
    x = torch.randn(1, 3, 384, 384)
    with torch.no_grad():
        torch.testing.assert_close(m.eval()(x), timm_384(x), rtol=1e-5, atol=1e-5)


def test_safetensors_round_trip_is_atomic(tmp_path):
    m = vitfast.create_model("vit_tiny_patch16_224", img_size=32, depth=2)
    path = tmp_path / "w.safetensors"
    save_checkpoint(m, path)
    assert sorted(os.listdir(tmp_path)) == ["w.safetensors"]  # no temporary file left behind
    m2 = vitfast.create_model("vit_tiny_patch16_224", img_size=32, depth=2, checkpoint_path=path)
    for (k, a), (_, b) in zip(m.state_dict().items(), m2.state_dict().items()):
        assert torch.equal(a, b), k
    before = path.read_bytes()

    class Boom(RuntimeError):
        pass

    def failing(tmp):
        open(tmp, "wb").write(b"partial")
        raise Boom

    with pytest.raises(Boom):
        vitfast.files.atomic_write(path, failing)
    assert path.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["w.safetensors"]


def test_mismatch_lists_missing_unexpected_and_shapes():
    m = vitfast.create_model("vit_tiny_patch16_224", img_size=32, depth=2)
    sd = m.state_dict()
    sd.pop("blocks.1.mlp.fc2.bias")
    sd["blocks.9.attn.qkv.weight"] = torch.zeros(3)
    sd["head.weight"] = torch.zeros(10, 192)
    with pytest.raises(CheckpointMismatchError) as e:
        load_state_dict(m, sd)
    msg = str(e.value)
    assert "missing keys (1): blocks.1.mlp.fc2.bias" in msg
    assert "unexpected keys (1): blocks.9.attn.qkv.weight" in msg
    assert "shape mismatch for head.weight: checkpoint (10, 192), model (1000, 192)" in msg


def test_non_strict_loads_what_matches_and_returns_the_rest():
    src = vitfast.create_model("vit_tiny_patch16_224", img_size=32, depth=2, num_classes=10)
    dst = vitfast.create_model("vit_tiny_patch16_224", img_size=32, depth=2)
    result = load_state_dict(dst, src.state_dict(), strict=False)
    assert [k for k, _, _ in result.mismatched_keys] == ["head.bias", "head.weight"] or \
        sorted(k for k, _, _ in result.mismatched_keys) == ["head.bias", "head.weight"]
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert torch.equal(dst.blocks[1].attn.qkv.weight, src.blocks[1].attn.qkv.weight)
    assert not torch.equal(dst.head.weight[:10], src.head.weight)


def test_missing_file_is_named():
    with pytest.raises(FileNotFoundError, match="checkpoint_path '/nonexistent.pth' does not exist"):
        vitfast.create_model("vit_tiny_patch16_224", checkpoint_path="/nonexistent.pth")
