"""Oracle: tokenise strings with PaddleNLP 2.8.1's ``ErnieViLTokenizer``.

Run under the PaddleNLP interpreter (``.venv-paddlenlp``), as a subprocess of the tests::

    python tests/oracles/paddlenlp_tokenize.py payload.json --vocab vocab.txt --out result.json [--mode pretrained]

* ``payload.json``: a JSON list of strings.
* ``--vocab``: a vocab file, either the official ``token<TAB>id`` form or PaddleNLP's one token per line. PaddleNLP
  reads only the latter (id = line number), so an official file is rewritten, ids dropped, into a temporary
  directory first; its ids must then equal the line numbers (they do for the released vocab), else exit status 2.
  The tokenizer is built from that file only, nothing is downloaded: ``--mode pretrained`` (default) calls
  ``ErnieViLTokenizer.from_pretrained(<local dir>)`` with that vocab and ``{"do_lower_case": true}``, as users get it
  (special-token strings in the text are then kept whole); ``--mode direct`` calls ``ErnieViLTokenizer(vocab_file=)``
  (no special-token handling: ``unique_no_split_tokens`` stays empty).
* ``--out``: JSON ``{"ids": [[int]], "tokens": [[str]], "vocab_size": int, "special_ids": {token: id}}``; ids are
  ``convert_tokens_to_ids(tokenize(text))``, without ``[CLS]``/``[SEP]``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile


def _plain_vocab(src: str, tmpdir: str) -> str:
    with open(src, encoding="utf-8") as f:
        lines = f.read().split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if not any("\t" in line for line in lines):
        return src
    tokens = []
    for num, line in enumerate(lines):
        token, _, index = line.partition("\t")
        if index and int(index) != num:
            raise SystemExit(f"error: {src} line {num + 1}: id {index} != line number {num}; "
                             "PaddleNLP's one-token-per-line format cannot express it")
        tokens.append(token)
    out = os.path.join(tmpdir, "vocab.txt")
    with open(out, "w", encoding="utf-8") as f:
        f.write("\n".join(tokens) + "\n")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("payload")
    ap.add_argument("--vocab", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--mode", choices=("pretrained", "direct"), default="pretrained")
    args = ap.parse_args()
    with open(args.payload, encoding="utf-8") as f:
        texts = json.load(f)
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        print("error: the payload must be a JSON list of strings", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("PPNLP_HOME", os.path.join(tmp, "ppnlp_home"))  # keep any cache writes private
        from paddlenlp.transformers import ErnieViLTokenizer

        vocab = _plain_vocab(args.vocab, tmp)
        if args.mode == "direct":
            tok = ErnieViLTokenizer(vocab_file=vocab)
        else:
            local = os.path.join(tmp, "tokenizer")
            os.makedirs(local)
            with open(vocab, encoding="utf-8") as f, open(os.path.join(local, "vocab.txt"), "w",
                                                          encoding="utf-8") as g:
                g.write(f.read())
            with open(os.path.join(local, "tokenizer_config.json"), "w", encoding="utf-8") as g:
                json.dump({"do_lower_case": True, "tokenizer_class": "ErnieViLTokenizer"}, g)
            tok = ErnieViLTokenizer.from_pretrained(local)
        tokens = [tok.tokenize(t) for t in texts]
        ids = [tok.convert_tokens_to_ids(t) for t in tokens]
        special = {t: tok.convert_tokens_to_ids(t) for t in ("[PAD]", "[CLS]", "[SEP]", "[MASK]", "[UNK]", "$")}
        result = {"ids": ids, "tokens": tokens, "vocab_size": len(tok.vocab), "special_ids": special,
                  "mode": args.mode}
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(result, f, ensure_ascii=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
