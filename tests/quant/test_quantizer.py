"""Straight-through Quantizer: forward rounds the value, backward rounds the gradient; gradcheck of
the straight-through wiring; torch.compile; nn.Module behaviour."""
import pytest
import torch

from vitfast.quant import FloatingPoint, Quantizer, quantize, quantizer
from tests.values import assert_same_bits


@pytest.mark.parametrize("fwd,bwd", [("fp8_e4m3", "bf16"), (FloatingPoint(5, 2), None), (None, "fp8_e5m2"),
                                     ("bf16", FloatingPoint(3, 1, saturate=True))])
def test_forward_and_backward_are_quantized(fwd, bwd):
    x = (torch.randn(64) * 10).requires_grad_()
    g = torch.randn(64) * 1e-3
    y = Quantizer(fwd, bwd)(x)
    assert_same_bits(y.detach(), x.detach() if fwd is None else quantize(x.detach(), fwd))
    y.backward(g)
    assert_same_bits(x.grad, g if bwd is None else quantize(g, bwd))


def test_stochastic_backward_is_reproducible():
    def grad(seed):
        x = torch.randn(100, requires_grad=True, generator=torch.Generator().manual_seed(1))
        torch.manual_seed(seed)
        quantizer("fp16", "fp8_e5m2", "stochastic", "stochastic")(x).backward(torch.full((100,), 0.3))
        return x.grad

    assert_same_bits(grad(4), grad(4))
    assert not torch.equal(grad(4), grad(5))
    assert set(grad(4).unique().tolist()) == {0.25, 0.3125}  # the two e5m2 neighbours of 0.3


def test_gradcheck_straight_through_wiring():
    # With a format that represents every input exactly (fp32 for fp32 data) the straight-through
    # Jacobian must be the identity; one-hot output gradients are exact in every backward format.
    x = torch.randn(6, dtype=torch.float32, requires_grad=True)
    for bwd in (None, "bf16", "fp8_e4m3"):
        assert torch.autograd.gradcheck(quantizer("fp32", bwd), (x,), eps=1e-2, atol=1e-3, rtol=1e-3)


def test_quantizer_in_a_model_trains_under_compile():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), Quantizer("fp16", "bf16"), torch.nn.GELU(),
                                torch.nn.Linear(16, 1), Quantizer("fp8_e4m3", "fp8_e5m2"))
    compiled = torch.compile(model, fullgraph=True)
    x = torch.randn(32, 8)
    eager_out = model(x)
    assert_same_bits(compiled(x), eager_out)
    compiled(x).sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    eager_out.sum().backward()
    # Inductor reorders the backward's float arithmetic, which can move a value across a bf16
    # rounding boundary: allow one bf16 step.
    for a, b in zip(grads, (p.grad for p in model.parameters())):
        torch.testing.assert_close(a, b, rtol=2**-7, atol=1e-6)


def test_module_repr_and_errors():
    q = Quantizer("fp16", FloatingPoint(5, 2), backward_rounding="stochastic")
    assert "FloatingPoint(exp=5, man=10)" in repr(q) and "stochastic" in repr(q)
    with pytest.raises(ValueError, match="forward_format: unknown format 'fp9'"):
        Quantizer("fp9")
    with pytest.raises(ValueError, match="backward_rounding must be one of"):
        quantizer("fp16", "bf16", backward_rounding="down")
