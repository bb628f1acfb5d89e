"""ernievil2torch: Baidu's ERNIE-ViL 2.0 (ViT-B/16 + ERNIE 3.0 Base, Chinese) in PyTorch, converted from Paddle.

The package is layered; each layer imports only the ones before it (``tests/test_architecture.py`` keeps it so):

    errors, constants, config        what everything shares (config: the registry of named sizes)
    storage                          atomic publishing, the converted-directory format
    modeling                         layers, the two towers, the dual encoder
    processing                       the official tokenizer and image pipeline
    pretrained                       one loader: model + tokenizer + image processor
    conversion                       the restricted .pdparams reader, ops, layouts, the converter
    export                           Hugging Face and ONNX
    verify                           synthetic checkpoints, the Paddle reference, parity, the logit check
    apps                             similarity, zero-shot, embed, retrieval
    cli, embed                       fire adapters (``convert.py``, ``check.py``, ``test.py``, ``ernievil2``)

The names below are imported on first use, so ``import ernievil2torch`` (and the checkpoint reader) stays cheap.
"""
from __future__ import annotations

import importlib
from typing import Any

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


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        value = getattr(importlib.import_module(f".{_PUBLIC[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_PUBLIC))
