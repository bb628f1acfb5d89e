"""What every graph export writes beside its graphs: the model's ``config.json`` and, when the model has one, its
``vocab.txt`` (a deployment needs the tokenizer's vocabulary and the sizes, not only the graphs)."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Union

from ..config import ErnieViL2Config
from ..constants import CONFIG_NAME, VOCAB_NAME


def write_config_and_vocab(config: ErnieViL2Config, model_dir: Union[str, Path], out: Path) -> None:
    """Save ``config`` as OUT/config.json and copy MODEL_DIR/vocab.txt to OUT when it exists."""
    config.save(out / CONFIG_NAME)
    vocab = Path(model_dir) / VOCAB_NAME
    if vocab.is_file():
        shutil.copyfile(vocab, out / VOCAB_NAME)
