"""OptimLP: low-precision training around a torch optimizer (qtorch 0.3.0's OptimLP, tightened).

Each step(), in this order:
  1. runs the closure, if any, then scales every gradient by grad_scaling and quantizes it (grad_quant);
  2. with acc_quant, puts each parameter's accumulator (its higher-precision copy) into the parameter,
     lets the inner optimizer step, and stores acc_quant(result) back as the accumulator;
  3. quantizes the weights (weight_quant), from the accumulator when there is one;
  4. quantizes the optimizer's state (momentum_quant): SGD's momentum buffer, Adam's and AdamW's moments.
Only parameters that have a gradient take part, as in torch's optimizers. Every update is an in-place
copy, so parameters, gradients and state keep their dtype, device and storage.

Where it differs from qtorch: the closure runs before the gradients are quantized (qtorch ran it inside
the inner step, so its gradients went unquantized and its forward pass saw the accumulator, not the
weights); grad_scaling applies without grad_quant too; AdamW and amsgrad's max_exp_avg_sq are covered;
state_dict() carries the accumulators, so a resumed run continues bit for bit.
"""
import functools
import math
import numbers

import torch

from .functional import quantize
from .number import as_number

__all__ = ["OptimLP"]

# The state tensors momentum_quant rounds, by optimizer class (subclasses included). Keys a parameter's
# state lacks are skipped: SGD keeps no buffer when momentum == 0, Adam no max_exp_avg_sq without amsgrad.
_MOMENTUM_KEYS = (
    (torch.optim.SGD, ("momentum_buffer",)),
    (torch.optim.Adam, ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")),
    (torch.optim.AdamW, ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")),
)


def _as_quant(q, name):
    """None, a callable tensor -> tensor, or a number format (rounded to nearest) -> None or a callable."""
    if q is None or callable(q):
        return q
    try:
        fmt = as_number(q, name)
    except TypeError:
        raise TypeError(f"{name} must be None, a callable tensor -> tensor or a number format (FloatingPoint, "
                        f"FixedPoint, BlockFloatingPoint, a qtorch number or a name such as 'bf16'); "
                        f"got {type(q).__name__}") from None
    return functools.partial(quantize, fmt=fmt)  # a partial, not a lambda, so OptimLP pickles


class OptimLP(torch.optim.Optimizer):
    """Wraps `optimizer` (SGD, Adam, AdamW, or any other when momentum_quant is None) and quantizes
    gradients, weights, an optional weight accumulator and the optimizer state around its step().

    Each *_quant is None (leave alone), a callable tensor -> tensor (e.g. vitfast.quant.quantizer(...),
    which also allows stochastic rounding) or a number format accepted by as_number, rounded to nearest.
    grad_scaling multiplies every gradient before grad_quant (e.g. to keep small gradients in range).

    param_groups, state and defaults are the inner optimizer's own, so LR schedulers and code that edits
    param_groups act on it directly. The accumulators are in `weight_acc` ({parameter: tensor}).
    """

    def __init__(self, optimizer, weight_quant=None, grad_quant=None, momentum_quant=None, acc_quant=None,
                 grad_scaling=1.0):
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError("optimizer must be a torch.optim.Optimizer such as torch.optim.SGD(model.parameters(), "
                            f"lr=0.1), got {type(optimizer).__name__}")
        if isinstance(optimizer, torch.optim.LBFGS):
            raise ValueError("OptimLP cannot wrap LBFGS: it re-evaluates the closure inside its own step, "
                             "bypassing the gradient quantization")
        if isinstance(grad_scaling, bool) or not isinstance(grad_scaling, numbers.Real):
            raise TypeError(f"grad_scaling must be a positive finite number, got {type(grad_scaling).__name__}")
        if not (math.isfinite(grad_scaling) and grad_scaling > 0):
            raise ValueError(f"grad_scaling must be a positive finite number, got {grad_scaling}")
        self._specs = dict(weight_quant=weight_quant, grad_quant=grad_quant, momentum_quant=momentum_quant,
                           acc_quant=acc_quant)  # as given, for __repr__
        self.weight_quant = _as_quant(weight_quant, "weight_quant")
        self.grad_quant = _as_quant(grad_quant, "grad_quant")
        self.momentum_quant = _as_quant(momentum_quant, "momentum_quant")
        self.acc_quant = _as_quant(acc_quant, "acc_quant")
        self.momentum_keys = next((keys for cls, keys in _MOMENTUM_KEYS if isinstance(optimizer, cls)), None)
        if self.momentum_quant is not None and self.momentum_keys is None:
            raise ValueError(f"momentum_quant supports SGD, Adam and AdamW; the state tensors of "
                             f"{type(optimizer).__name__} are unknown (pass momentum_quant=None to wrap it)")
        self.optimizer = optimizer
        self.grad_scaling = grad_scaling
        self.weight_acc = {}  # parameter -> accumulator, created at the parameter's first step
        # Optimizer.__init__ is skipped: it would build param groups and state of its own, where OptimLP must
        # share the inner optimizer's. __setstate__ sets up what the base class still needs: its hook tables
        # and the wrapper that runs step hooks (used by LR schedulers and profilers).
        self.__setstate__({})

    # Looked up on every access rather than stored: the inner load_state_dict replaces these objects.
    @property
    def param_groups(self):
        return self.optimizer.param_groups

    @property
    def state(self):
        return self.optimizer.state

    @property
    def defaults(self):
        return self.optimizer.defaults

    def __getstate__(self):  # the base class's keeps only defaults, state and param_groups
        return dict(self.__dict__)

    def __repr__(self):
        specs = "".join(f"{k}={v!r}, " for k, v in self._specs.items() if v is not None)
        return f"OptimLP({specs}grad_scaling={self.grad_scaling}, optimizer={self.optimizer!r})"

    def _params(self):
        return [p for group in self.param_groups for p in group["params"]]

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            # Here rather than inside the inner step: its forward pass must see the quantized weights and
            # the gradients it computes must be quantized below.
            with torch.enable_grad():
                loss = closure()
        params = [p for p in self._params() if p.grad is not None]
        for p in params:
            if self.grad_scaling != 1:
                p.grad.mul_(self.grad_scaling)
            if self.grad_quant is not None:
                p.grad.copy_(self.grad_quant(p.grad))
        if self.acc_quant is not None:
            for p in params:
                # The update is applied to the accumulator, so steps too small for the weight format add up.
                if p not in self.weight_acc:
                    self.weight_acc[p] = p.detach().clone()
                p.copy_(self.weight_acc[p])
        self.optimizer.step()
        for p in params:
            w = p.detach()
            if self.acc_quant is not None:
                w = self.weight_acc[p].copy_(self.acc_quant(w))
            if self.weight_quant is not None:
                w = self.weight_quant(w)
            if self.acc_quant is not None or self.weight_quant is not None:
                p.copy_(w)
            if self.momentum_quant is not None:
                state = self.state.get(p, {})  # .get: state is a defaultdict, indexing would add entries
                for key in self.momentum_keys:
                    if isinstance(state.get(key), torch.Tensor):
                        state[key].copy_(self.momentum_quant(state[key]))
        return loss

    def zero_grad(self, set_to_none=True):
        self.optimizer.zero_grad(set_to_none)

    def add_param_group(self, param_group):
        self.optimizer.add_param_group(param_group)

    def state_dict(self):
        """The inner optimizer's state_dict plus "weight_acc": {parameter index: accumulator}, the indices
        being those of its "state" (position in param_groups order)."""
        state_dict = self.optimizer.state_dict()
        index = {p: i for i, p in enumerate(self._params())}
        state_dict["weight_acc"] = {index[p]: acc for p, acc in self.weight_acc.items()}
        return state_dict

    def load_state_dict(self, state_dict):
        """Loads a state_dict() of OptimLP, or of the inner optimizer alone (the accumulators then restart
        from the parameters at their next step)."""
        state_dict = dict(state_dict)
        saved = state_dict.pop("weight_acc", {})
        self.optimizer.load_state_dict(state_dict)  # validates the groups against ours first
        params = self._params()
        # Copies, in each parameter's dtype and device: accumulators are updated in place, and must not
        # write into the caller's dict.
        self.weight_acc = {params[i]: acc.to(device=params[i].device, dtype=params[i].dtype, copy=True)
                           for i, acc in saved.items()}
