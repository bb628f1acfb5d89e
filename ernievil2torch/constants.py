"""Every fixed value of the released model and of the project's file formats, in one place.

Nothing here imports torch or numpy: the checkpoint reader and the command line import this module cheaply.
"""
from __future__ import annotations

from typing import Dict, Tuple

# ---- text input layout ----------------------------------------------------------------------------------------
#: The official evaluation layout: ``[CLS] + 46 word pieces + [SEP]``, padded with ``[PAD]`` to 48 tokens.
DEFAULT_MAX_LENGTH = 48
#: Learned absolute positions of the released text tower: no text can be longer.
MAX_TEXT_POSITIONS = 2048
#: Special tokens a vocab must hold; their ids are read from the file, never assumed.
PAD_TOKEN, CLS_TOKEN, SEP_TOKEN, MASK_TOKEN, UNK_TOKEN = "[PAD]", "[CLS]", "[SEP]", "[MASK]", "[UNK]"
REQUIRED_SPECIAL_TOKENS: Tuple[str, ...] = (PAD_TOKEN, CLS_TOKEN, SEP_TOKEN, UNK_TOKEN)
#: Paddle's ERNIE adds -10000 (not -inf) to the scores of masked keys; exp(-10000 - max) is exactly 0 in fp32.
MASK_BIAS = -10000.0

# ---- image input ----------------------------------------------------------------------------------------------
IMAGE_SIZE = 224
IMAGENET_MEAN: Tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: Tuple[float, float, float] = (0.229, 0.224, 0.225)

# ---- the converted-directory format ---------------------------------------------------------------------------
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
VOCAB_NAME = "vocab.txt"

# ---- a fine-tuning run's output folder ---------------------------------------------------------------------------
RUN_SETTINGS_NAME = "run.json"             # the settings the run was started with (checked by --resume)
METRICS_LOG_NAME = "metrics.jsonl"         # one JSON object per line: training logs, validations, skipped images
CHECKPOINTS_DIR = "checkpoints"            # step-00000050/ ...: converted directories + TRAINER_STATE_NAME
TRAINER_STATE_NAME = "trainer_state.pt"    # optimizer, scheduler, step, RNG (tensors and plain values only)
BEST_DIR = "best"                          # the converted directory with the best validation mean recall
FINAL_DIR = "final"                        # the converted directory after the last step
#: Initial value of a temperature added to a checkpoint that has none (Baidu's ``temperature_b`` init, log 14.3).
OFFICIAL_TEMPERATURE_INIT = 2.65926

# ---- released checkpoints -------------------------------------------------------------------------------------
DEFAULT_CHECKPOINT_NAMES: Tuple[str, ...] = ("OPEN_ERNIE_VIL2_BASE_ViT.pdparams", "ERNIE_VIL2_BASE_ViT.pdparams")
DOWNLOAD_HINT = (
    "Download the official checkpoint and vocab (see README.md, 'Real checkpoint'):\n"
    "  http://bj.bcebos.com/wenxin-models/OPEN_ERNIE_VIL2_BASE_ViT.pdparams\n"
    "  (older name: http://bj.bcebos.com/wenxin-models/ERNIE_VIL2_BASE_ViT.pdparams)\n"
    "  vocab.txt from PaddlePaddle/ERNIE, branch ernie-kit-open-v1.0, Research/ERNIE-ViL2/packages/ernie_vil2/")
#: Source keys of the official file that no part of the released model uses (a ViT classification head left over
#: from pre-training): regexes, dropped and reported by the converter.
OFFICIAL_DROPPED_KEYS: Tuple[str, ...] = (r"visual\.classfy\.(weight|bias)",)
#: Marks written into a converted directory's safetensors metadata.
CONVERTED_BY = "ernievil2torch"
SYNTHETIC_SOURCE_PREFIX = "synthetic"

# ---- compute / storage dtypes ---------------------------------------------------------------------------------
#: Every spelling a command or ``from_pretrained`` accepts, mapped to the canonical name (``torch.<name>``).
#: :func:`ernievil2torch.config.canonical_dtype` is the one resolver of this table.
DTYPE_ALIASES: Dict[str, str] = {
    "float32": "float32", "fp32": "float32",
    "float16": "float16", "fp16": "float16", "half": "float16",
    "bfloat16": "bfloat16", "bf16": "bfloat16",
}
#: The converter's extra choice: store each tensor in the source file's own dtype.
KEEP_DTYPE = "keep"

# ---- the choices of the commands --------------------------------------------------------------------------------
#: ``finetune --precision``: ``auto`` (bf16 autocast where the GPU supports it), ``fp32`` or ``bf16``.
PRECISIONS: Tuple[str, ...] = ("auto", "fp32", "bf16")
#: The two towers of the model (``finetune --freeze``).
TOWERS: Tuple[str, ...] = ("vision", "text")
#: ``eval --protocol`` values (see :func:`~ernievil2torch.retrieval.metrics.retrieval_metrics`).
PROTOCOLS: Tuple[str, ...] = ("grouped", "pairs")
#: What ``embed`` encodes (``--kind``).
EMBED_KINDS: Tuple[str, ...] = ("image", "text")

#: Environment variable naming the CPU inference kernels (``reference``, or ``DTYPE=KERNEL,...``; ``auto`` or unset:
#: this machine's measured choice). See :mod:`ernievil2torch.modeling.kernel_choice`.
KERNELS_ENV = "ERNIEVIL2_KERNELS"
#: Added to the refusal of a resume whose settings differ: how to continue with the kernels a run was started with.
KERNELS_RESUME_ADVICE = (f"(a 'kernels' difference: this machine now chooses other kernels; set {KERNELS_ENV} to "
                         "the recorded value, or to 'reference' where none is recorded, to continue)")
