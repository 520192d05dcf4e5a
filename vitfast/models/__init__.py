"""vitfast's models: ViT, DeiT, T2T-ViT, DVT, ConViT, behind a timm-compatible registry."""
from . import convit, deit, dvt, t2t_vit, vision_transformer, vision_transformer_hybrid  # noqa: F401  (registers)
from .checkpoint import CheckpointMismatchError, load_checkpoint, load_for_finetune, load_state_dict, save_checkpoint
from .complexity import count_macs, count_params
from .convit import ConVit
from .deit import VisionTransformerDistilled
from .dvt import DynamicVisionTransformer, fit_thresholds
from .npz import NpzLoadResult, NpzMismatchError, load_npz, save_npz
from .t2t_vit import T2TViT
from .registry import create_model, get_model_config, list_models, register_model
from .vision_transformer import VisionTransformer
from .vision_transformer_hybrid import HybridEmbed, ResNetV2

__all__ = ["ConVit", "create_model", "list_models", "register_model", "get_model_config", "VisionTransformer",
           "VisionTransformerDistilled", "load_checkpoint", "load_for_finetune", "load_state_dict", "save_checkpoint",
           "CheckpointMismatchError", "count_params", "count_macs", "load_npz", "save_npz", "NpzLoadResult",
           "NpzMismatchError", "HybridEmbed", "ResNetV2", "T2TViT", "DynamicVisionTransformer", "fit_thresholds"]
