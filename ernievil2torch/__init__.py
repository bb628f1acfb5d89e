"""ernievil2torch: Baidu's ERNIE-ViL 2.0 (ViT-B/16 + ERNIE 3.0 Base, Chinese) in PyTorch, converted from Paddle.

The package is layered; each layer imports only the ones before it (``tests/test_architecture.py`` keeps it so):

    errors, constants                what everything shares
    config                           dataclass configs, the registry of named sizes, parameter shapes, dtype names
    storage                          atomic publishing; the converted-directory, embed-output and run-record formats
    modeling                         layers, the two towers, the dual encoder
    processing                       the official tokenizer and image pipeline
    data                             dataset readers and their factory, embed's inputs, image roots, demo images
    pretrained, conversion           one loader by name; the restricted .pdparams reader, layouts, the converter
    runtime                          batch encoding, the progress bar, process-group setup
    retrieval                        recall metrics, exact top-k, the search back ends
    export                           Hugging Face, ONNX, back to Paddle
    verify                           synthetic checkpoints, the Paddle reference, parity, the logit check
    apps, training                   the batch tools and the service; fine-tuning (siblings)
    cli, embed, finetune             the command line (``convert.py``, ``check.py``, ``test.py``, ``ernievil2``)

The names below are imported on first use, so ``import ernievil2torch`` (and the checkpoint reader) stays cheap.
"""
from __future__ import annotations

from .lazy_exports import lazy_exports

__version__ = "0.1.0"

_PUBLIC = {
    "CheckpointError": "errors", "ErnieViL2Error": "errors", "InputError": "errors", "KeyMapError": "errors",
    "OutputExistsError": "errors", "UnsafePickleError": "errors",
    "ErnieViL2Config": "config", "TextConfig": "config", "VisionConfig": "config", "base_config": "config",
    "tiny_config": "config", "get_model_config": "config", "list_models": "config", "register_model": "config",
    "unregister_model": "config", "resolve_model": "config",
    "ErnieViL2": "modeling", "ErnieViL2Output": "modeling",
    "ErnieViL2ImageProcessor": "processing", "ErnieViL2Processor": "processing", "ErnieViL2Tokenizer": "processing",
    "Pretrained": "pretrained", "create_model": "pretrained", "load_pretrained": "pretrained",
}

__all__ = sorted(_PUBLIC)


__getattr__, __dir__ = lazy_exports(__name__, globals(), _PUBLIC)
