"""Runs in .venv-openclip (open-clip-torch 3.x, no ernievil2torch): open_clip's own code on an exported package.

    python open_clip_run.py tokenize SPEC texts.json out.json   ids of open_clip.get_tokenizer(SPEC) per text (at
                                                                 its context length and at SHORT_CONTEXT), of its
                                                                 HF tokenizer alone (no cleaning), and what
                                                                 open_clip's cleaning makes of each text
    python open_clip_run.py features SPEC inputs.npz out.npz    open_clip.create_model_and_transforms(SPEC):
                                                                 encode_image(pixels), encode_text(input_ids),
                                                                 logit_scale, and its preprocess of each image file
                                                                 listed in inputs['images'] (JSON list of paths)
"""
import importlib.util
import json
import sys

assert importlib.util.find_spec("ernievil2torch") is None, "ernievil2torch must not be importable here"

import numpy as np  # noqa: E402
import open_clip  # noqa: E402
import torch  # noqa: E402
from open_clip.tokenizer import _clean_whitespace  # noqa: E402  (HFTokenizer's default clean='whitespace')
from PIL import Image  # noqa: E402


#: A second context length: how open_clip truncates a text longer than it (``tok(texts, context_length=...)``).
SHORT_CONTEXT = 16


def tokenize(spec, texts_path, out_path):
    texts = json.loads(open(texts_path, encoding="utf-8").read())
    tok = open_clip.get_tokenizer(spec)
    records = []
    for text in texts:
        record = {}
        try:
            record["cleaned"] = _clean_whitespace(text)
            record["ids"] = tok([text])[0].tolist()
            record["ids_short"] = tok([text], context_length=SHORT_CONTEXT)[0].tolist()
        except Exception as exc:  # one text open_clip cannot take: recorded, not fatal
            record["error"] = f"{type(exc).__name__}: {exc}"
        try:  # the package's tokenizer itself (transformers.AutoTokenizer), without open_clip's cleaning
            record["raw_ids"] = tok.tokenizer(text, max_length=tok.context_length, padding="max_length",
                                              truncation=True)["input_ids"]
        except Exception as exc:
            record["raw_error"] = f"{type(exc).__name__}: {exc}"
        records.append(record)
    out = {"class": type(tok).__name__, "backend": type(tok.tokenizer).__name__, "context_length": tok.context_length,
           "short_context": SHORT_CONTEXT,
           "versions": {"open_clip": open_clip.__version__, "torch": torch.__version__}, "records": records}
    open(out_path, "w", encoding="utf-8").write(json.dumps(out, ensure_ascii=True))


def features(spec, inputs_path, out_path):
    torch.set_num_threads(2)
    inputs = np.load(inputs_path)
    model, _, preprocess = open_clip.create_model_and_transforms(spec)
    model.eval()
    out = {}
    with torch.no_grad():
        out["image"] = model.encode_image(torch.from_numpy(inputs["pixel_values"])).numpy()
        out["text"] = model.encode_text(torch.from_numpy(inputs["input_ids"])).numpy()
        out["logit_scale"] = model.logit_scale.detach().numpy()
        images = json.loads(str(inputs["images"])) if "images" in inputs else []
        if images:
            out["preprocessed"] = torch.stack([preprocess(Image.open(p)) for p in images]).numpy()
    out["model_class"] = np.asarray(type(model).__name__)
    np.savez(out_path, **out)


if __name__ == "__main__":
    {"tokenize": tokenize, "features": features}[sys.argv[1]](*sys.argv[2:])
