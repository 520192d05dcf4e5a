"""Activation checkpointing (set_grad_checkpointing, --grad-checkpointing): the same gradients, with the
blocks' activations recomputed in the backward pass instead of stored."""
import pytest
import torch
from torch.utils.checkpoint import checkpoint as torch_checkpoint

import vitfast
from vitfast.layers import set_grad_checkpointing
from vitfast.layers import block as block_module

MODELS = {
    "vit_tiny_patch16_224": dict(img_size=32, patch_size=8, depth=2, drop_path_rate=0.2, drop_rate=0.1),
    "convit_tiny": dict(img_size=32, patch_size=8, depth=3, local_up_to_layer=2, drop_path_rate=0.2),
    "t2t_vit_7": dict(img_size=32, depth=2, drop_path_rate=0.2),
    "dvt_t2t_vit_12": dict(img_size=64),
}


@pytest.mark.parametrize("name", MODELS)
def test_gradients_equal_the_plain_model(name, monkeypatch):
    torch.manual_seed(0)
    model = vitfast.create_model(name, num_classes=5, **MODELS[name]).train()
    size = MODELS[name]["img_size"]
    x = torch.randn(2, 3, size, size)

    def grads():
        torch.manual_seed(1)  # the same dropout / drop-path draws in both runs
        out = model(x)
        out = torch.stack(out).sum(0) if isinstance(out, list) else out
        model.zero_grad()
        out.square().mean().backward()
        return out.detach(), {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}

    plain_out, plain = grads()
    calls = []

    def counting(fn, *args, **kwargs):
        calls.append(fn)
        return torch_checkpoint(fn, *args, **kwargs)

    monkeypatch.setattr(block_module, "checkpoint", counting)
    set_grad_checkpointing(model)
    ckpt_out, ckpt = grads()
    assert calls, "no block ran checkpointed"
    assert torch.equal(plain_out, ckpt_out)
    assert plain.keys() == ckpt.keys()
    for k in plain:
        torch.testing.assert_close(ckpt[k], plain[k], rtol=1e-5, atol=1e-7, msg=k)
    calls.clear()
    with torch.no_grad():
        model(x)
    assert not calls, "inference does not checkpoint"
    set_grad_checkpointing(model, False)
    grads()
    assert not calls


def test_state_dict_is_unchanged():
    model = vitfast.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=2)
    keys = list(model.state_dict())
    assert list(set_grad_checkpointing(model).state_dict()) == keys
