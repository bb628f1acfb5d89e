"""The network: shared layers, the two towers, the dual encoder and its converted-directory loading."""
from .loss import contrastive_loss
from .model import ErnieViL2, ErnieViL2Output
from .text import TextEncoder
from .vision import VisionEncoder

__all__ = ["ErnieViL2", "ErnieViL2Output", "TextEncoder", "VisionEncoder", "contrastive_loss"]
