"""ernievil2torch: Baidu's ERNIE-ViL 2.0 (ViT-B/16 + ERNIE 3.0 Base, Chinese) in PyTorch, converted from Paddle."""
from .config import ErnieViL2Config, TextConfig, VisionConfig, base_config, tiny_config
from .errors import CheckpointError, ErnieViL2Error, InputError, KeyMapError, UnsafePickleError
from .image_processing import ErnieViL2ImageProcessor
from .model import ErnieViL2, ErnieViL2Output
from .processor import ErnieViL2Processor
from .tokenizer import ErnieViL2Tokenizer

__version__ = "0.1.0"

__all__ = [
    "CheckpointError", "ErnieViL2", "ErnieViL2Config", "ErnieViL2Error", "ErnieViL2ImageProcessor",
    "ErnieViL2Output", "ErnieViL2Processor", "ErnieViL2Tokenizer", "InputError",
    "KeyMapError", "TextConfig", "UnsafePickleError", "VisionConfig", "base_config", "tiny_config",
]
