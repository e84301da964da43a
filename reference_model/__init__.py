"""The project's own PyTorch I-JEPA encoder, its variants, and checkpoint loading."""

from .checkpoint import CheckpointError, LoadedCheckpoint, Preprocessing, load_checkpoint, save_hf_checkpoint
from .model import EncoderOutput, IJepaEncoder
from .position_embeddings import interpolate_position_table, sincos_position_table
from .variants import VARIANTS, Architecture, UnknownVariantError, Variant, get_variant

__all__ = [
    "VARIANTS", "Architecture", "CheckpointError", "EncoderOutput", "IJepaEncoder", "LoadedCheckpoint",
    "Preprocessing", "UnknownVariantError", "Variant", "get_variant", "interpolate_position_table",
    "load_checkpoint", "save_hf_checkpoint", "sincos_position_table",
]
