"""Exponential moving average of the weights (DeiT / DVT recipes: decay 0.99996)."""
import copy

import torch


class ModelEma:
    def __init__(self, model, decay):
        self.decay = decay
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model):
        ema_params = list(self.module.state_dict().values())
        params = list(model.state_dict().values())
        floats = [(e, p) for e, p in zip(ema_params, params) if e.dtype.is_floating_point]
        torch._foreach_lerp_([e for e, _ in floats], [p.detach() for _, p in floats], 1 - self.decay)
        for e, p in zip(ema_params, params):
            if not e.dtype.is_floating_point:
                e.copy_(p)

    def state_dict(self):
        return self.module.state_dict()

    def load_state_dict(self, state_dict):
        self.module.load_state_dict(state_dict)
