"""Building blocks of the models, with timm's module and parameter names."""
from .attention import Attention, attention_core, split_heads
from .backend import BACKENDS, get_backend, set_backend, set_model_backend, use_backend
from .block import Block, run_block, run_blocks, set_grad_checkpointing
from .drop import DropPath, LayerScale, drop_path
from .mlp import Mlp
from .patch_embed import PatchEmbed, check_image, to_2tuple
from .pos_embed import resample_abs_pos_embed, sinusoid_table

__all__ = ["Attention", "attention_core", "split_heads", "BACKENDS", "get_backend", "set_backend", "set_model_backend",
           "use_backend", "Block", "run_block", "run_blocks", "set_grad_checkpointing", "DropPath", "LayerScale", "drop_path", "Mlp", "PatchEmbed", "check_image",
           "to_2tuple", "resample_abs_pos_embed", "sinusoid_table"]
