"""Fine-tuning ERNIE-ViL 2.0: the contrastive loss, global negatives across processes, the training loop."""
from ..modeling.loss import contrastive_loss

__all__ = ["contrastive_loss"]
