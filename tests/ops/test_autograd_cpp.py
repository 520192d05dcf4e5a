"""The fused ops' and the quantizers' gradients are C++ autograd nodes (csrc/*/*_autograd.cpp): recording
and running an op's backward calls no Python. On a fast GPU at small widths the host's time per op is what a step is made of
(ViT-Ti on an H200: torch.library's Python wrappers cost ~70-90 us a call, more than the kernels saved)."""
import os
import sys

import pytest
import torch

import vitfast

# where Python code of an op's own would live: vitfast's package, torch.library's wrappers, autograd.Function
WATCHED = (os.path.dirname(vitfast.__file__), os.path.dirname(torch.library.__file__) + os.sep + "_library",
           os.path.dirname(torch.autograd.__file__) + os.sep + "function.py")


def python_calls(fn):
    """The files of the Python functions that run inside fn and belong to an op's own code (WATCHED)."""
    seen = []

    def hook(frame, event, arg):
        if event == "call":
            seen.append(frame.f_code.co_filename)

    sys.setprofile(hook)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return [f for f in seen if f.startswith(WATCHED)]


def leaf(*shape):
    return torch.randn(*shape, requires_grad=True)


def layer_norm_call():
    x, r = leaf(2, 5, 16), leaf(2, 5, 16)
    out, s, _, _ = torch.ops.vitfast.layer_norm.default(x, r, leaf(16), leaf(16), 1e-5, True)
    return out + s, (x, r)


def linear_residual_call():
    x = leaf(2, 5, 16)
    return torch.ops.vitfast.linear_residual.default(x, leaf(8, 16), leaf(8), leaf(2, 5, 8), "auto"), (x,)


def linear_gelu_call():
    x = leaf(2, 5, 16)
    return torch.ops.vitfast.linear_gelu.default(x, leaf(8, 16), leaf(8), "none", True, "auto")[0], (x,)


def attention_call():
    q, k, v, bias = leaf(2, 3, 7, 8), leaf(2, 3, 7, 8), leaf(2, 3, 7, 8), leaf(1, 3, 7, 7)
    out, _, logits = torch.ops.vitfast.attention_fwd.default(q, k, v, bias, 0.35, True, False, False, True)
    return out.sum() + logits.sum(), (q, k, v, bias)


def float_quantize_call():
    x = leaf(4, 8)
    return torch.ops.vitfast.float_quantize.default(x, 5, 2, "nearest", True, True, False, None), (x,)


def fixed_point_quantize_call():
    x = leaf(4, 8)
    return torch.ops.vitfast.fixed_point_quantize.default(x, 8, 4, True, False, "nearest", None), (x,)


def block_quantize_call():
    x = leaf(4, 8)
    return torch.ops.vitfast.block_quantize.default(x, 8, 1, None, "nearest", None), (x,)


@pytest.mark.parametrize("call", [layer_norm_call, linear_residual_call, linear_gelu_call, attention_call,
                                  float_quantize_call, fixed_point_quantize_call, block_quantize_call],
                         ids=lambda f: f.__name__.removesuffix("_call"))
def test_forward_and_backward_run_no_python(call):
    box = {}
    assert python_calls(lambda: box.update(result=call())) == []
    y, inputs = box["result"]
    assert y.grad_fn is not None
    grads = {}
    assert python_calls(lambda: grads.update(g=torch.autograd.grad(y.sum(), inputs))) == []
    assert all(g is not None and g.shape == t.shape and torch.isfinite(g).all() for g, t in zip(grads["g"], inputs))


@pytest.mark.parametrize("call", [float_quantize_call, fixed_point_quantize_call, block_quantize_call],
                         ids=lambda f: f.__name__.removesuffix("_call"))
def test_quantizers_pass_the_gradient_straight_through(call):
    y, (x,) = call()
    g = torch.randn_like(y)
    (dx,) = torch.autograd.grad(y, x, g)
    assert torch.equal(dx, g)
