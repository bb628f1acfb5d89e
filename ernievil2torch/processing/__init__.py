"""Front ends: the official tokenizer, the official image pipeline, and the processor that wraps both."""
from .image import ErnieViL2ImageProcessor
from .processor import ErnieViL2Processor
from .tokenizer import ErnieViL2Tokenizer
from .vocab import load_vocab, resolve_vocab

__all__ = ["ErnieViL2ImageProcessor", "ErnieViL2Processor", "ErnieViL2Tokenizer", "load_vocab", "resolve_vocab"]
