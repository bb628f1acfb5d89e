"""What open_clip's text cleaning does to ERNIE-ViL 2.0's text features: each caption encoded as written and as
open_clip's ``HFTokenizer`` cleans it first (``ftfy.fix_text``, ``html.unescape`` twice, whitespace collapsed),
with our tokenizer and model; prints, per rewritten caption, the cosine of the two features, then their mean.

    .venv/bin/python benchmarks/open_clip_cleaning.py converted/ernie_vil2_base [captions.txt]

Run it with the released weights (random weights cannot show the effect). Captions: one per line, default the
project's realistic Chinese captions (tests/captions.py). Needs ftfy (requirements-dev.txt).
"""
from __future__ import annotations

import html
import sys
from pathlib import Path
from typing import List, Sequence, Tuple

import torch

def open_clip_clean(text: str) -> str:
    """open_clip 3.x ``_clean_whitespace``: ``ftfy.fix_text``, ``html.unescape`` twice, whitespace collapsed."""
    import ftfy

    return " ".join(html.unescape(html.unescape(ftfy.fix_text(text))).strip().split())


def cleaning_effect(model_dir: str, captions: Sequence[str]) -> List[Tuple[str, str, float]]:
    """``(caption, cleaned, cosine of their text features)`` for every caption the cleaning rewrites."""
    from ernievil2torch import load_pretrained

    loaded = load_pretrained(model_dir)
    tokenizer = loaded.require_tokenizer()
    rewritten = [(c, open_clip_clean(c)) for c in captions if open_clip_clean(c) != c]
    if not rewritten:
        return []
    rows = []
    with torch.inference_mode():
        for originals in (0, 1):
            batch = tokenizer([pair[originals] for pair in rewritten], padding="longest")
            rows.append(loaded.model.encode_text(batch["input_ids"], batch["attention_mask"], normalize=True))
    cosines = (rows[0] * rows[1]).sum(-1).tolist()
    return [(c, d, float(x)) for (c, d), x in zip(rewritten, cosines)]


def main(argv: Sequence[str]) -> None:
    if not argv:
        sys.exit(__doc__)
    if len(argv) > 1:
        captions = [line.strip() for line in Path(argv[1]).read_text(encoding="utf-8").splitlines() if line.strip()]
    else:
        from repo import load_file

        captions = load_file("tests/captions.py").REALISTIC_CAPTIONS
    effect = cleaning_effect(argv[0], captions)
    for caption, cleaned, cosine in effect:
        print(f"{cosine:.6f}\t{caption}\t{cleaned}")
    if effect:
        print(f"{len(effect)} of {len(captions)} captions rewritten; mean cosine {sum(e[2] for e in effect) / len(effect):.6f}")


if __name__ == "__main__":
    main(sys.argv[1:])
