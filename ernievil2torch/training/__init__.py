"""Fine-tuning ERNIE-ViL 2.0: the contrastive loss, global negatives across processes, the training loop.

* :func:`contrastive_loss` (from :mod:`ernievil2torch.modeling.loss`): the symmetric CLIP loss of Baidu's code;
* :func:`finetune`: the run behind ``ernievil2 finetune`` (data, augmentation, AdamW + warm-up/cosine, checkpoints,
  validation, exact resume, ``torchrun``);
* :mod:`.distributed`: features gathered across processes with their gradient;
* :mod:`.augment`: the official train-time crop and flip.
"""
from ..modeling.loss import contrastive_loss
from .distributed import ContrastiveObjective, gather_with_grad
from .trainer import FinetuneResult, FinetuneSettings, Trainer, finetune

__all__ = ["ContrastiveObjective", "FinetuneResult", "FinetuneSettings", "Trainer", "contrastive_loss", "finetune",
           "gather_with_grad"]
