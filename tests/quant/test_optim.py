"""OptimLP against hand-computed steps and the plain torch optimizers: quantized gradients, weights,
accumulators and optimizer state, bit-identical resumption, reproducible stochastic rounding, the
torch optimizer protocol, and the argument errors."""
import copy
import io
import math

import pytest
import torch
import torch.nn.functional as F

from tests.values import assert_same_bits
from vitfast.quant import FixedPoint, FloatingPoint, OptimLP, quantize, quantizer

E4M3 = FloatingPoint(4, 3)
E5M2 = FloatingPoint(5, 2)

OPTIMIZERS = {
    "sgd": lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, weight_decay=1e-3, nesterov=True),
    "adam": lambda ps: torch.optim.Adam(ps, lr=1e-2, amsgrad=True),
    "adamw": lambda ps: torch.optim.AdamW(ps, lr=1e-2, weight_decay=0.1),
}
STATE_KEYS = {"sgd": {"momentum_buffer"}, "adam": {"step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"},
              "adamw": {"step", "exp_avg", "exp_avg_sq"}}


def make_model(seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return model.to(dtype)


def make_batches(n, seed=1, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(16, 6, generator=g).to(dtype), torch.randn(16, 3, generator=g).to(dtype)) for _ in range(n)]


def backward(model, x, y):
    loss = F.mse_loss(model(x), y)
    loss.backward()
    return loss


def train(model, opt, batches):
    for x, y in batches:
        opt.zero_grad()
        backward(model, x, y)
        opt.step()


def assert_representable(t, fmt):
    assert_same_bits(quantize(t, fmt), t)


def assert_same_params(a, b):
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert_same_bits(p.detach(), q.detach())


@pytest.mark.parametrize("closure", [False, True])
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_without_quantizers_matches_plain_optimizer(name, closure):
    plain, wrapped = make_model(), make_model()
    opt_plain, opt_lp = OPTIMIZERS[name](plain.parameters()), OptimLP(OPTIMIZERS[name](wrapped.parameters()))
    for x, y in make_batches(5):
        for model, opt in ((plain, opt_plain), (wrapped, opt_lp)):
            def step_closure(model=model, opt=opt):
                opt.zero_grad()
                return backward(model, x, y)
            if closure:
                model.loss = opt.step(step_closure)
            else:
                step_closure()
                assert opt.step() is None
    assert_same_params(plain, wrapped)
    if closure:
        assert_same_bits(plain.loss, wrapped.loss)


@pytest.mark.parametrize("fmt", ["bf16", E4M3, FixedPoint(10, 7)], ids=str)
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_weights_representable_after_each_step(name, fmt):
    model = make_model()
    first = next(model.parameters())
    assert not torch.equal(quantize(first.detach(), fmt), first.detach())  # the check below means something
    ptrs = [p.data_ptr() for p in model.parameters()]
    opt = OptimLP(OPTIMIZERS[name](model.parameters()), weight_quant=fmt)
    for batch in make_batches(3):
        train(model, opt, [batch])
        for p in model.parameters():
            assert p.dtype == torch.float32
            assert_representable(p.detach(), fmt)
    assert [p.data_ptr() for p in model.parameters()] == ptrs  # updated in place


@pytest.mark.parametrize("grad_quant,scaling", [(E4M3, 0.25), (E4M3, 1.0), (None, 8.0), ("bf16", 1024)])
def test_gradients_scaled_and_quantized_as_computed_by_hand(grad_quant, scaling):
    model, (x, y) = make_model(), make_batches(1)[0]
    backward(model, x, y)
    before = [(p.detach().clone(), p.grad.clone()) for p in model.parameters()]
    OptimLP(torch.optim.SGD(model.parameters(), lr=0.1), grad_quant=grad_quant, grad_scaling=scaling).step()
    for p, (p0, g0) in zip(model.parameters(), before):
        g = g0 * scaling
        if grad_quant is not None:
            g = quantize(g, grad_quant)
            assert not torch.equal(g, g0 * scaling)
        assert_same_bits(p.grad, g)
        assert_same_bits(p.detach(), p0.add(g, alpha=-0.1))  # SGD stepped with the quantized gradient


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_optimizer_state_quantized(name):
    model, reference = make_model(), make_model()
    opt = OptimLP(OPTIMIZERS[name](model.parameters()), momentum_quant=E5M2)
    opt_ref = OPTIMIZERS[name](reference.parameters())
    batches = make_batches(3)
    train(model, opt, batches)
    train(reference, opt_ref, batches)
    for p, r in zip(model.parameters(), reference.parameters()):
        state = opt.state[p]
        assert set(state) == STATE_KEYS[name]
        for key in STATE_KEYS[name] - {"step"}:
            assert_representable(state[key], E5M2)
            assert not torch.equal(state[key], opt_ref.state[r][key])  # quantization changed something


def test_sgd_momentum_buffer_by_hand():
    model, (x, y) = make_model(), make_batches(1)[0]
    backward(model, x, y)
    grads = [p.grad.clone() for p in model.parameters()]
    opt = OptimLP(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), momentum_quant=E4M3)
    opt.step()
    for p, g in zip(model.parameters(), grads):
        assert_same_bits(opt.state[p]["momentum_buffer"], quantize(g, E4M3))  # the first buffer is the gradient


def test_sgd_without_momentum_has_no_buffer_to_quantize():
    model = make_model()
    opt = OptimLP(torch.optim.SGD(model.parameters(), lr=0.1), momentum_quant=E4M3)
    train(model, opt, make_batches(2))
    assert all("momentum_buffer" not in opt.state.get(p, {}) for p in model.parameters())


def test_accumulator_steps_by_hand_and_stays_apart_from_weights():
    model, lr = make_model(), 0.1
    opt = OptimLP(torch.optim.SGD(model.parameters(), lr=lr), weight_quant=E4M3, acc_quant="bf16")
    acc = [p.detach().clone() for p in model.parameters()]  # the accumulators start from the weights
    for x, y in make_batches(4):
        opt.zero_grad()
        backward(model, x, y)
        acc = [quantize(a.add(p.grad, alpha=-lr), "bf16") for a, p in zip(acc, model.parameters())]
        opt.step()
        for p, a in zip(model.parameters(), acc):
            assert_same_bits(opt.weight_acc[p], a)
            assert_same_bits(p.detach(), quantize(a, E4M3))
            assert opt.weight_acc[p].data_ptr() != p.data_ptr()
    assert any(not torch.equal(opt.weight_acc[p], p.detach()) for p in model.parameters())


def test_accumulator_keeps_updates_too_small_for_the_weight_format():
    """Each step moves w by w * 2^-11, under half a bf16 ulp: plain bf16 weights never move, while
    the accumulator adds the steps up until the weights change."""
    w0 = quantize(torch.randn(64, generator=torch.Generator().manual_seed(3)) + 0.1, "bf16")
    moved = {}
    for acc_quant in (None, "fp32"):
        w = torch.nn.Parameter(w0.clone())
        opt = OptimLP(torch.optim.SGD([w], lr=2.0**-11), weight_quant="bf16", acc_quant=acc_quant)
        for _ in range(64):
            opt.zero_grad()
            (w * w0).sum().backward()  # gradient w0
            opt.step()
        assert_representable(w.detach(), "bf16")
        moved[acc_quant] = int((w.detach() != w0).sum())
    assert moved[None] == 0
    assert moved["fp32"] == w0.numel()


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_state_dict_round_trip_continues_bit_identically(name):
    quants = dict(weight_quant=E4M3, grad_quant="bf16", momentum_quant="fp16", acc_quant="bf16")
    batches = make_batches(6)
    model = make_model()
    opt = OptimLP(OPTIMIZERS[name](model.parameters()), **quants)
    train(model, opt, batches[:3])
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buffer)
    train(model, opt, batches[3:])

    buffer.seek(0)
    saved = torch.load(buffer)
    assert set(saved["opt"]["weight_acc"]) == set(range(4))
    resumed = {}
    for keep_acc in (True, False):
        other = make_model(seed=7)
        other.load_state_dict(saved["model"])
        other_opt = OptimLP(OPTIMIZERS[name](other.parameters()), **quants)
        state = copy.deepcopy(saved["opt"])  # torch's load_state_dict keeps (and steps) the tensors it gets
        if not keep_acc:
            del state["weight_acc"]
        other_opt.load_state_dict(state)
        if keep_acc:  # copies: training must not write into the loaded dict
            ptrs = {t.data_ptr() for t in state["weight_acc"].values()}
            assert not ptrs & {t.data_ptr() for t in other_opt.weight_acc.values()}
        train(other, other_opt, batches[3:])
        resumed[keep_acc] = other, other_opt
    other, other_opt = resumed[True]
    assert_same_params(model, other)
    for p, q in zip(model.parameters(), other.parameters()):
        assert_same_bits(opt.weight_acc[p], other_opt.weight_acc[q])
        for key, value in opt.state[p].items():
            assert_same_bits(value, other_opt.state[q][key])
    # Without its accumulators a resumed run starts from the coarser weights and drifts apart.
    other = resumed[False][0]
    assert any(not torch.equal(p, q) for p, q in zip(model.parameters(), other.parameters()))


def run_stochastic(seed, rounding="stochastic"):
    model = make_model()
    opt = OptimLP(torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9),
                  weight_quant=quantizer("bf16", forward_rounding=rounding),
                  grad_quant=quantizer(E5M2, forward_rounding=rounding),
                  momentum_quant=quantizer("fp16", forward_rounding=rounding))
    torch.manual_seed(seed)
    train(model, opt, make_batches(3))
    return model


def test_stochastic_rounding_reproducible_under_manual_seed():
    a, b, c = run_stochastic(5), run_stochastic(5), run_stochastic(6)
    assert_same_params(a, b)
    assert any(not torch.equal(p, q) for p, q in zip(a.parameters(), c.parameters()))
    nearest = run_stochastic(5, rounding="nearest")
    assert any(not torch.equal(p, q) for p, q in zip(a.parameters(), nearest.parameters()))


def test_low_precision_training_reduces_loss():
    g = torch.Generator().manual_seed(11)
    x = torch.randn(256, 8, generator=g)
    y = x @ torch.randn(8, 1, generator=g) + 0.5 + 0.01 * torch.randn(256, 1, generator=g)
    model = torch.nn.Linear(8, 1)
    with torch.no_grad():
        model.weight.copy_(torch.randn(1, 8, generator=g))
    opt = OptimLP(torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9), weight_quant="bf16",
                  grad_quant="bf16")
    losses = []
    for _ in range(100):
        opt.zero_grad()
        losses.append(backward(model, x, y).item())
        opt.step()
    assert losses[-1] < 0.01 * losses[0]
    for p in model.parameters():
        assert_representable(p.detach(), "bf16")


def test_closure_sees_quantized_weights_and_its_gradients_are_quantized():
    model, seen = make_model(), []
    opt = OptimLP(torch.optim.SGD(model.parameters(), lr=0.1), weight_quant=E4M3, grad_quant=E5M2, acc_quant="fp32")
    for x, y in make_batches(3):
        def closure():
            opt.zero_grad()
            seen.append(model[0].weight.detach().clone())
            return backward(model, x, y)
        loss = opt.step(closure)
        assert loss.requires_grad and math.isfinite(loss.item())
        for p in model.parameters():
            assert_representable(p.grad, E5M2)
    for w in seen[1:]:  # from the second step on, the forward pass runs on the quantized weights
        assert_representable(w, E4M3)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_master_weights_keep_their_dtype(dtype):
    model = make_model(dtype=dtype)
    opt = OptimLP(torch.optim.Adam(model.parameters(), lr=1e-2), weight_quant=E4M3, grad_quant=E5M2,
                  momentum_quant="bf16" if dtype == torch.bfloat16 else "fp16", acc_quant="fp16")
    train(model, opt, make_batches(3, dtype=dtype))
    for p in model.parameters():
        assert p.dtype == p.grad.dtype == opt.weight_acc[p].dtype == dtype
        assert_representable(p.detach(), E4M3)


def test_parameters_without_gradient_are_left_alone():
    model = make_model()
    unused = torch.nn.Parameter(torch.randn(5, generator=torch.Generator().manual_seed(4)))
    before = unused.detach().clone()
    opt = OptimLP(torch.optim.SGD([*model.parameters(), unused], lr=0.1), weight_quant="bf16", acc_quant="fp32")
    train(model, opt, make_batches(2))
    assert_same_bits(unused.detach(), before)
    assert unused not in opt.weight_acc


def test_behaves_like_a_torch_optimizer():
    model = make_model()
    inner = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    opt = OptimLP(inner, weight_quant="bf16", grad_quant=quantizer(E5M2), grad_scaling=2.0)
    assert isinstance(opt, torch.optim.Optimizer)
    assert opt.param_groups is inner.param_groups and opt.state is inner.state and opt.defaults is inner.defaults
    text = repr(opt)
    assert text.startswith("OptimLP(weight_quant='bf16', grad_quant=<function") and "grad_scaling=2.0" in text
    assert "momentum: 0.9" in text

    scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    train(model, opt, make_batches(2))
    scheduler.step()
    assert inner.param_groups[0]["lr"] == 0.05

    opt.zero_grad(set_to_none=False)
    assert all(p.grad is not None and not p.grad.any() for p in model.parameters())
    opt.zero_grad()
    assert all(p.grad is None for p in model.parameters())

    extra = torch.nn.Parameter(torch.randn(3, generator=torch.Generator().manual_seed(9)))
    opt.add_param_group({"params": [extra], "lr": 0.01})
    assert len(inner.param_groups) == 2 and inner.param_groups[1]["momentum"] == 0.9
    (extra * torch.arange(1.0, 4.0)).sum().backward()
    opt.step()
    assert_representable(extra.detach(), "bf16")

    clone = copy.deepcopy(opt)  # pickles with its inner optimizer
    assert isinstance(clone, OptimLP) and clone.optimizer is not inner and clone.grad_scaling == 2.0


def test_load_plain_optimizer_state_dict_and_vice_versa():
    model = make_model()
    opt = OptimLP(torch.optim.Adam(model.parameters(), lr=1e-2), acc_quant="bf16")
    train(model, opt, make_batches(2))
    plain = torch.optim.Adam(model.parameters(), lr=1e-2)
    plain.load_state_dict(opt.state_dict())  # the extra "weight_acc" entry is ignored
    opt.load_state_dict(plain.state_dict())  # accumulators restart from the weights
    assert opt.weight_acc == {}
    train(model, opt, make_batches(1, seed=5))
    assert len(opt.weight_acc) == 4


def test_other_optimizers_wrap_without_momentum_quant():
    model = make_model()
    opt = OptimLP(torch.optim.RMSprop(model.parameters(), lr=1e-3), weight_quant="bf16", grad_quant="bf16")
    train(model, opt, make_batches(2))
    for p in model.parameters():
        assert_representable(p.detach(), "bf16")


def sgd():
    return torch.optim.SGD(make_model().parameters(), lr=0.1)


@pytest.mark.parametrize("make,kwargs,error,match", [
    (lambda: list(make_model().parameters()), {}, TypeError, "optimizer must be a torch.optim.Optimizer.*got list"),
    (lambda: torch.optim.LBFGS(make_model().parameters()), {}, ValueError, "cannot wrap LBFGS"),
    (sgd, {"grad_scaling": 0}, ValueError, "grad_scaling must be a positive finite number, got 0"),
    (sgd, {"grad_scaling": -2.0}, ValueError, "grad_scaling must be a positive finite number, got -2.0"),
    (sgd, {"grad_scaling": math.inf}, ValueError, "grad_scaling must be a positive finite number, got inf"),
    (sgd, {"grad_scaling": math.nan}, ValueError, "grad_scaling must be a positive finite number, got nan"),
    (sgd, {"grad_scaling": "2"}, TypeError, "grad_scaling must be a positive finite number, got str"),
    (sgd, {"grad_scaling": True}, TypeError, "grad_scaling must be a positive finite number, got bool"),
    (sgd, {"weight_quant": 8}, TypeError, "weight_quant must be None, a callable tensor -> tensor or a number format"),
    (sgd, {"grad_quant": torch.bfloat16}, TypeError, "grad_quant must be None, .*got dtype"),
    (sgd, {"momentum_quant": [8, 7]}, TypeError, "momentum_quant must be None, .*got list"),
    (sgd, {"acc_quant": object()}, TypeError, "acc_quant must be None, .*got object"),
    (sgd, {"weight_quant": "bf17"}, ValueError, "weight_quant: unknown format 'bf17'"),
    (lambda: torch.optim.RMSprop(make_model().parameters()), {"momentum_quant": "bf16"}, ValueError,
     "momentum_quant supports SGD, Adam and AdamW; the state tensors of RMSprop are unknown"),
])
def test_bad_arguments(make, kwargs, error, match):
    with pytest.raises(error, match=match):
        OptimLP(make(), **kwargs)
