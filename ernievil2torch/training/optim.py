"""The optimiser and the learning-rate schedule of PaddleNLP's ERNIE-ViL 2.0 recipe.

* AdamW (betas 0.9 / 0.999, eps 1e-8), decoupled weight decay on the weight matrices of Linear and Conv layers only:
  no decay on biases, LayerNorm parameters, embeddings (word, position, class and positional embeddings) and the
  temperature. (PaddleNLP's Trainer excludes names containing "bias" or "norm", so there the embeddings, the
  temperature and the ViT's ``ln_pre``/``ln_post`` scales *are* decayed; the exclusions here are the usual CLIP/BERT
  ones.)
* Gradients clipped to a global norm of 1.0 (``max_grad_norm``, the Trainer's default).
* Linear warm-up from 0, then a half-cosine to 0 at the last step (``get_cosine_schedule_with_warmup``, PaddleNLP's
  ``--lr_scheduler_type cosine``).
"""
from __future__ import annotations

import math
from typing import Dict, List

import torch
from torch import nn


def decayed_parameter_names(model: nn.Module) -> List[str]:
    """Names of the parameters that get weight decay: ``weight`` of every ``nn.Linear`` and ``nn.Conv2d``."""
    names = []
    for module_name, module in model.named_modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            names.append(f"{module_name}.weight" if module_name else "weight")
    return names


def parameter_groups(model: nn.Module, weight_decay: float) -> List[Dict[str, object]]:
    """Two AdamW groups over the trainable parameters (``requires_grad``): decayed and not decayed."""
    decayed = set(decayed_parameter_names(model))
    trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    return [{"params": [p for name, p in trainable if name in decayed], "weight_decay": weight_decay},
            {"params": [p for name, p in trainable if name not in decayed], "weight_decay": 0.0}]


#: AdamW's moment decay rates and epsilon: the defaults of ``finetune`` (FinetuneSettings reads them from here).
ADAM_BETA1, ADAM_BETA2, ADAM_EPS = 0.9, 0.999, 1e-8


def make_optimizer(model: nn.Module, lr: float, weight_decay: float, betas=(ADAM_BETA1, ADAM_BETA2),
                   eps: float = ADAM_EPS) -> torch.optim.AdamW:
    """AdamW over :func:`parameter_groups`: weight decay on Linear and Conv weights only."""
    return torch.optim.AdamW(parameter_groups(model, weight_decay), lr=lr, betas=tuple(betas), eps=eps)


def warmup_cosine(step: int, warmup_steps: int, total_steps: int) -> float:
    """The learning-rate factor at ``step`` (0-based): ``step / warmup`` during warm-up, then
    ``0.5 * (1 + cos(pi * progress))`` with ``progress = (step - warmup) / (total - warmup)``."""
    if step < warmup_steps:
        return step / max(1, warmup_steps)
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))


def make_scheduler(optimizer: torch.optim.Optimizer, warmup_steps: int,
                   total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: warmup_cosine(step, warmup_steps, total_steps))
