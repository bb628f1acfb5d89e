"""Promises of the exporters that the feature comparisons in ``test_export.py`` cannot see: the HF tokenizer's
vocab (every id kept, gaps filled, the last token too), configs that are stock Hugging Face ones apart from the
towers' own values, the export registry's options, and the Paddle file name. Milliseconds each, no transformers
model built."""
from __future__ import annotations

import json

import pytest

from ernievil2torch.config import tiny_config
from ernievil2torch.errors import InputError
from ernievil2torch.export.hf import hf_text_config, hf_vision_config, write_hf_vocab
from ernievil2torch.export.registry import EXPORTERS, exporter
from helpers import require_module


def test_the_hf_vocab_keeps_every_id_fills_gaps_and_keeps_the_last_token(tmp_path):
    source = tmp_path / "vocab.txt"
    source.write_text("[PAD]\t0\n[CLS]\t1\n[SEP]\t2\n$\t4\n[UNK]\t5\n$\t7\n[MASK]\t6\n", encoding="utf-8")
    out = tmp_path / "hf"
    out.mkdir()
    written = write_hf_vocab(source, out, model_max_length=20)
    assert [p.name for p in written] == ["vocab.txt", "tokenizer_config.json", "special_tokens_map.json"]
    lines = (out / "vocab.txt").read_text(encoding="utf-8").splitlines()
    assert lines == ["[PAD]", "[CLS]", "[SEP]", "[unused3]", "$", "[UNK]", "[MASK]", "$"]
    config = json.loads((out / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert config["model_max_length"] == 20 and config["tokenizer_class"] == "BertTokenizer"
    assert config["do_lower_case"] is True and config["tokenize_chinese_chars"] is True
    specials = json.loads((out / "special_tokens_map.json").read_text(encoding="utf-8"))
    assert specials == {"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]",
                        "mask_token": "[MASK]"}
    assert {k: config[k] for k in specials} == specials
    plain = tmp_path / "plain.txt"  # one token a line: ids are line numbers
    plain.write_text("[PAD]\n[CLS]\n[SEP]\nz\n", encoding="utf-8")
    write_hf_vocab(plain, out)
    assert (out / "vocab.txt").read_text(encoding="utf-8").splitlines() == ["[PAD]", "[CLS]", "[SEP]", "z"]


def test_hf_configs_are_stock_apart_from_the_towers_own_values():
    """Every field of the exported configs is either our tower's value or the stock Hugging Face default (so a
    head added on top initialises as it would on any ERNIE / CLIP model)."""
    transformers = require_module("transformers")
    CLIPVisionConfig, ErnieConfig = transformers.CLIPVisionConfig, transformers.ErnieConfig
    config = tiny_config()
    t, v = config.text, config.vision
    text, vision = hf_text_config(config), hf_vision_config(config)
    ours_text = {"vocab_size": t.vocab_size, "hidden_size": t.hidden_size, "num_hidden_layers": t.num_layers,
                 "num_attention_heads": t.num_heads, "intermediate_size": t.intermediate_size,
                 "hidden_dropout_prob": t.hidden_dropout, "attention_probs_dropout_prob": t.attention_dropout,
                 "max_position_embeddings": t.max_position_embeddings, "layer_norm_eps": t.layer_norm_eps,
                 "pad_token_id": t.pad_token_id, "type_vocab_size": 1, "architectures": ["ErnieModel"]}
    ours_vision = {"hidden_size": v.hidden_size, "intermediate_size": v.intermediate_size,
                   "num_hidden_layers": v.num_layers, "num_attention_heads": v.num_heads,
                   "num_channels": v.num_channels, "image_size": v.image_size, "patch_size": v.patch_size,
                   "hidden_act": "quick_gelu", "layer_norm_eps": v.layer_norm_eps,
                   "attention_dropout": v.attention_dropout, "projection_dim": v.hidden_size,
                   "architectures": ["CLIPVisionModel"]}
    for exported, ours, stock in ((text, ours_text, ErnieConfig().to_dict()),
                                  (vision, ours_vision, CLIPVisionConfig().to_dict())):
        for key, value in exported.items():
            if key in ours:
                assert value == ours[key], key
            elif key in stock and key not in ("dtype", "torch_dtype"):  # other keys: older versions read them
                assert value == stock[key], (key, value, stock[key])
        assert exported["dtype"] == exported["torch_dtype"] == "float32"
    assert text["model_type"] == "ernie" and vision["model_type"] == "clip_vision_model"
    assert text["hidden_act"] == "gelu" and text["use_task_id"] is False  # exact-erf GELU; no task-id embedding


def test_the_registry_names_each_format_its_options_and_its_extra():
    assert list(EXPORTERS) == ["hf", "onnx", "paddle"]
    assert EXPORTERS["hf"].options == ("vocab",) and EXPORTERS["hf"].extra is None and not EXPORTERS["hf"].requires
    assert EXPORTERS["onnx"].options == ("opset",) and EXPORTERS["onnx"].extra == "export"
    assert EXPORTERS["onnx"].requires == ("onnx",)
    assert EXPORTERS["paddle"].options == ("layout",) and EXPORTERS["paddle"].extra is None
    with pytest.raises(InputError, match="unknown export format 'tflite'; formats: hf, onnx, paddle"):
        exporter("tflite")


def test_export_model_passes_only_the_formats_own_options(monkeypatch, tmp_path):
    from ernievil2torch.export import registry

    seen = {}

    def fake(model_dir, out, overwrite=False, **options):
        seen.update(model_dir=model_dir, out=out, overwrite=overwrite, options=options)
        return "result"

    monkeypatch.setitem(registry.EXPORTERS, "fake", registry.Exporter("fake", f"{__name__}:unused", "a test format",
                                                                      options=("layout",)))
    monkeypatch.setattr(__import__(__name__), "unused", fake, raising=False)
    assert registry.export_model("fake", "m", "o", True, layout="paddlenlp", vocab="v.txt", opset=17) == "result"
    assert seen == {"model_dir": "m", "out": "o", "overwrite": True, "options": {"layout": "paddlenlp"}}
    missing = registry.Exporter("needs", "x:y", "h", extra="export", requires=("no_such_module_here",))
    monkeypatch.setitem(registry.EXPORTERS, "needs", missing)
    with pytest.raises(InputError, match=r"--format needs needs no_such_module_here: pip install "
                                          r"'ernievil2torch\[export\]'"):
        exporter("needs")
