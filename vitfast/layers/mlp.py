"""The transformer MLP with timm's names (fc1, act, drop1, norm, fc2, drop2). With the "vitfast"
backend, fc1 + GELU run as one fused op (vitfast.ops.linear_gelu) where vitfast.layers.fused allows."""
from torch import nn

from . import backend as backends
from . import fused


class Mlp(nn.Module):
    def __init__(self, in_features, hidden_features=None, out_features=None, act_layer=nn.GELU, norm_layer=None,
                 bias=True, drop=0.0):
        super().__init__()
        hidden_features = hidden_features or in_features
        out_features = out_features or in_features
        self.fc1 = nn.Linear(in_features, hidden_features, bias=bias)
        self.act = act_layer()
        self.drop1 = nn.Dropout(drop)
        self.norm = norm_layer(hidden_features) if norm_layer is not None else nn.Identity()
        self.fc2 = nn.Linear(hidden_features, out_features, bias=bias)
        self.drop2 = nn.Dropout(drop)
        self.act_quant = None  # rounds the activation's output; set by vitfast.quant.prepare_qat
        self.backend = None  # None: the global backend (vitfast.layers.backend)

    def forward(self, x):
        if backends.resolve(self.backend) == "vitfast" and mlp_fusable(self):
            return self.fc2(fused.mlp_hidden(self, x))
        h = self.act(self.fc1(x))
        if self.act_quant is not None:
            h = self.act_quant(h)
        return self.drop2(self.fc2(self.norm(self.drop1(h))))


def mlp_fusable(mlp):
    """An Mlp whose fc1 + GELU and fc2 (+ residual) can run fused."""
    return (type(mlp) is Mlp and mlp.act_quant is None and type(mlp.act) is nn.GELU
            and fused.plain_linear(mlp.fc1) and fused.plain_linear(mlp.fc2) and isinstance(mlp.norm, nn.Identity)
            and fused.inactive(mlp.drop1, mlp.training) and fused.inactive(mlp.drop2, mlp.training))
