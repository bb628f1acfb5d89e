"""Model configuration: the dataclasses, the registry of named sizes, parameter shapes, dtype names and the
resolution of model names. Torch-free: the converter and the command line import it cheaply."""
from .dtypes import canonical_dtype
from .registry import (RELEASED_MODEL_NAME, base_config, get_model_config, is_registered, list_models, match_shapes,
                       register_model, tiny224_config, tiny_config, unregister_model)
from .hub import HubId, parse_hub_id
from .resolve import ModelSource, model_path, resolve_model
from .schema import (CUSTOM_MODEL_TYPE, RELEASED_MODEL_TYPE, ErnieViL2Config, TextConfig, VisionConfig,
                     check_config)
from .shapes import Shape, parameter_shapes

__all__ = ["CUSTOM_MODEL_TYPE", "ErnieViL2Config", "HubId", "ModelSource", "RELEASED_MODEL_NAME",
           "RELEASED_MODEL_TYPE", "Shape", "TextConfig", "VisionConfig", "base_config", "canonical_dtype",
           "check_config", "get_model_config", "is_registered", "list_models", "match_shapes", "model_path",
           "parameter_shapes", "parse_hub_id", "register_model", "resolve_model", "tiny224_config", "tiny_config",
           "unregister_model"]

# The dataclasses are public as ``ernievil2torch.config.X`` (their repr, pickles and messages name that path).
for _public in (ErnieViL2Config, TextConfig, VisionConfig, ModelSource, HubId):
    _public.__module__ = __name__
del _public
