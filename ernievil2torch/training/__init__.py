"""Fine-tuning ERNIE-ViL 2.0: the contrastive loss, global negatives across processes, the training loop.

* :func:`contrastive_loss` (from :mod:`ernievil2torch.modeling.loss`): the symmetric CLIP loss of Baidu's code;
* :func:`finetune` / :func:`run_finetune` (:mod:`.entry`): the run behind ``ernievil2 finetune``; its flags, defaults
  and checks are :class:`FinetuneSettings` (:mod:`.settings`), its result :class:`FinetuneResult` (:mod:`.result`),
  its hooks :class:`TrainingEvents` (:mod:`.reporting`);
* :mod:`.trainer`: the loop (data, augmentation, AdamW + warm-up/cosine, checkpoints, validation, exact resume,
  ``torchrun``); :mod:`.run_folder`: when OUT may be used and what a resume continues; :mod:`.model_setup`: the
  temperature, gradient checkpointing and a frozen tower;
* :mod:`.distributed`: features gathered across processes with their gradient;
* :mod:`.augment`: the official train-time crop and flip.
"""
from ..modeling.loss import contrastive_loss
from .distributed import ContrastiveObjective, gather_with_grad
from .entry import finetune, run_finetune
from .reporting import TrainingEvents
from .result import FinetuneResult
from .settings import FinetuneSettings
from .trainer import Trainer

__all__ = ["ContrastiveObjective", "FinetuneResult", "FinetuneSettings", "Trainer", "TrainingEvents",
           "contrastive_loss", "finetune", "gather_with_grad", "run_finetune"]
