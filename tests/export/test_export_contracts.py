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
    assert list(EXPORTERS) == ["hf", "onnx", "openvino", "paddle", "open_clip"]
    assert EXPORTERS["hf"].options == ("vocab",) and EXPORTERS["hf"].extra is None and not EXPORTERS["hf"].requires
    assert EXPORTERS["onnx"].options == ("opset",) and EXPORTERS["onnx"].extra == "export"
    assert EXPORTERS["onnx"].requires == ("onnx",)
    assert EXPORTERS["paddle"].options == ("layout",) and EXPORTERS["paddle"].extra is None
    assert EXPORTERS["openvino"].options == () and EXPORTERS["openvino"].extra == "openvino"
    assert EXPORTERS["openvino"].requires == ("openvino",)
    assert EXPORTERS["open_clip"].options == ("vocab", "hub_id") and EXPORTERS["open_clip"].extra is None
    with pytest.raises(InputError, match="unknown export format 'tflite'; formats: hf, onnx, openvino, paddle, "
                                         "open_clip"):
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


# ---- what the exporters write -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_dir(model_folder):
    return model_folder("tiny", seed=3)  # no vocab.txt


def test_hf_export_without_a_vocab_says_so_and_a_missing_vocab_is_refused(tiny_dir, tmp_path):
    from ernievil2torch.export import export_hf

    result = export_hf(str(tiny_dir), str(tmp_path / "hf"))
    assert any("no vocab.txt" in note and "--vocab" in note for note in result.notes)
    assert sorted(p.name for p in (tmp_path / "hf" / "text").iterdir()) == ["config.json", "model.safetensors"]
    assert (tmp_path / "hf" / "README.txt").is_file()
    with pytest.raises(InputError, match="vocab file .* not found"):
        export_hf(str(tiny_dir), str(tmp_path / "hf2"), vocab=str(tmp_path / "absent.txt"))
    assert not (tmp_path / "hf2").exists()
    vocab = tmp_path / "v.txt"
    vocab.write_text("[PAD]\n[CLS]\n[SEP]\n[MASK]\n[UNK]\n", encoding="utf-8")
    result = export_hf(str(tiny_dir), str(tmp_path / "hf3"), vocab=str(vocab))
    assert result.notes == [] and (tmp_path / "hf3" / "text" / "special_tokens_map.json").is_file()
    config = json.loads((tmp_path / "hf3" / "text" / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert config["clean_up_tokenization_spaces"] is False and config["padding_side"] == "right"
    assert config["model_max_length"] == 48 and config["model_input_names"] == ["input_ids", "attention_mask"]


@pytest.fixture(scope="module")
def onnx_dir(tiny_dir, tmp_path_factory):
    require_module("onnx")
    from ernievil2torch.export import export_onnx

    import warnings

    out = tmp_path_factory.mktemp("onnx") / "out"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = export_onnx(str(tiny_dir), str(out))
    assert [str(w.message) for w in caught] == []  # the exporter's tracer notes are not the user's business
    return out, result


def test_onnx_export_writes_both_graphs_at_the_default_opset_with_the_config(onnx_dir, tiny_dir):
    onnx = require_module("onnx")
    out, result = onnx_dir
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "image_encoder.onnx", "text_encoder.onnx"]
    assert json.loads((out / "config.json").read_text()) == json.loads((tiny_dir / "config.json").read_text())
    for name, inputs in (("text_encoder.onnx", ["input_ids", "attention_mask"]), ("image_encoder.onnx",
                                                                                  ["pixel_values"])):
        graph = onnx.load(str(out / name))
        assert [o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")] == [17]
        assert [i.name for i in graph.graph.input] == inputs
        for tensor in graph.graph.input:  # the batch (and the text length) are dynamic
            dims = tensor.type.tensor_type.shape.dim
            assert dims[0].dim_param == "batch", (name, tensor.name)
            if name.startswith("text"):
                assert dims[1].dim_param == "length"
        (output,) = graph.graph.output  # [batch, hidden]: axis 0 is the batch, axis 1 is not
        out_dims = output.type.tensor_type.shape.dim
        assert out_dims[0].dim_param == "batch" and out_dims[1].dim_param != "batch", name
    assert "(opset 17)" in result.summary() and result.max_abs_diff is not None and result.max_abs_diff <= 1e-4
    assert any(note.startswith("onnxruntime check passed: max abs diff") for note in result.notes)


def test_without_onnxruntime_the_check_is_skipped_with_a_note(tiny_dir, tmp_path, monkeypatch):
    require_module("onnx")
    import sys

    from ernievil2torch.export import export_onnx

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails
    result = export_onnx(str(tiny_dir), str(tmp_path / "onnx"))
    assert result.max_abs_diff is None and any("onnxruntime not installed" in note for note in result.notes)


def test_onnx_export_copies_the_vocab(tmp_path, tiny_dir):
    require_module("onnx")
    import shutil

    from ernievil2torch.export import export_onnx

    model = tmp_path / "model"
    shutil.copytree(tiny_dir, model)
    (model / "vocab.txt").write_text("[PAD]\n[CLS]\n", encoding="utf-8")
    export_onnx(str(model), str(tmp_path / "onnx"), check=False)
    assert (tmp_path / "onnx" / "vocab.txt").read_text(encoding="utf-8") == "[PAD]\n[CLS]\n"


@pytest.mark.parametrize("tower,offset,fails", [("text", 1.5e-4, True), ("text", 5e-5, False),
                                                ("image", 1.5e-4, True)])
def test_the_onnx_check_fails_an_export_beyond_its_tolerance(tiny_dir, tmp_path, monkeypatch, tower, offset, fails):
    """The built-in ONNX Runtime check compares each tower with PyTorch at ``atol`` 1e-4: a graph off by more is
    refused (here PyTorch's side is shifted, which is the same to the check), one within it passes."""
    require_module("onnxruntime")
    from ernievil2torch import ErnieViL2
    from ernievil2torch.errors import ErnieViL2Error
    from ernievil2torch.export import export_onnx

    name = f"encode_{tower}"
    original = getattr(ErnieViL2, name)
    monkeypatch.setattr(ErnieViL2, name, lambda self, *a, **k: original(self, *a, **k) + offset)
    out = tmp_path / "onnx"
    if fails:
        with pytest.raises(ErnieViL2Error, match=f"{tower}_encoder.onnx: ONNX Runtime differs from PyTorch"):
            export_onnx(str(tiny_dir), str(out))
        assert not out.exists()
    else:
        assert export_onnx(str(tiny_dir), str(out)).max_abs_diff == pytest.approx(offset, rel=0.1)


@pytest.mark.parametrize("diff,cosine,refusal", [(1.5e-4, 1.0, "OpenVINO \\(f32 hint\\) differs from PyTorch"),
                                                (1e-4, 0.999, None),
                                                (0.0, 0.9989, "feature cosine 0.998900 to PyTorch is below 0.999")])
def test_the_openvino_check_holds_its_f32_tolerance_and_its_cosine_floor(tiny_dir, tmp_path, monkeypatch, diff,
                                                                         cosine, refusal):
    """The OpenVINO export's own check, as documented: the f32 hint within 1e-4 max abs diff of PyTorch and the
    device's default hint at a feature cosine of at least 0.999; both bounds themselves pass (the measured pair is
    stubbed here at exactly the values to test), anything beyond is refused with nothing written."""
    require_module("openvino")
    from ernievil2torch.errors import ErnieViL2Error
    from ernievil2torch.export import export_openvino
    from ernievil2torch.export import openvino as openvino_export

    monkeypatch.setattr(openvino_export, "_check", lambda core, paths, model, probes, hint: (diff, cosine))
    out = tmp_path / "ov"
    if refusal:
        with pytest.raises(ErnieViL2Error, match=refusal):
            export_openvino(str(tiny_dir), str(out))
        assert not out.exists()
    else:
        assert export_openvino(str(tiny_dir), str(out)).max_abs_diff == diff


@pytest.mark.parametrize("fmt", ["hf", "onnx", "paddle", "openvino", "open_clip"])
def test_an_existing_output_is_refused_before_the_model_is_read(tmp_path, fmt):
    """The output check comes first (no model loaded for a command that cannot write its output): an existing OUT
    with a model path that does not even exist is refused for the OUT."""
    from ernievil2torch.errors import OutputExistsError
    from ernievil2torch.export import export_model

    if fmt in ("onnx", "openvino"):
        require_module(fmt)
    out = tmp_path / ("out.pdparams" if fmt == "paddle" else "out")
    if fmt == "paddle":
        out.write_bytes(b"keep")
    else:
        out.mkdir()
        (out / "keep.txt").write_text("keep")
    with pytest.raises(OutputExistsError):
        export_model(fmt, str(tmp_path / "no-model-here"), str(out))
    from ernievil2torch.export import export_hf, export_onnx, export_openvino, export_paddle
    from ernievil2torch.export.open_clip import export_open_clip

    direct = {"hf": export_hf, "onnx": export_onnx, "paddle": export_paddle, "openvino": export_openvino,
              "open_clip": export_open_clip}[fmt]
    with pytest.raises(OutputExistsError):  # refusing is the default
        direct(str(tmp_path / "no-model-here"), str(out))
    assert (out.read_bytes() if fmt == "paddle" else (out / "keep.txt").read_bytes()) == b"keep"


def test_the_paddle_file_gets_its_suffix_and_an_unknown_layout_is_refused(tiny_dir, tmp_path):
    from ernievil2torch.export import export_paddle

    result = export_paddle(str(tiny_dir), str(tmp_path / "weights"))
    assert result.out == tmp_path / "weights.pdparams" and result.out.is_file()
    assert not (tmp_path / "weights").exists() and "official layout" in result.summary()
    kept = export_paddle(str(tiny_dir), str(tmp_path / "named.pdparams"), layout="paddlenlp")
    assert kept.out == tmp_path / "named.pdparams" and "paddlenlp layout" in kept.summary()
    with pytest.raises(InputError, match="--layout must be one of"):
        export_paddle(str(tiny_dir), str(tmp_path / "other"), layout="onnx")
    assert not (tmp_path / "other.pdparams").exists()



@pytest.mark.parametrize("hub_id", ["org/name@v1", "hf-hub:org/name", "org/name:latest", "name", "a/b/c"])
def test_the_open_clip_package_takes_a_plain_hub_id_only(tiny_dir, tmp_path, hub_id):
    """--hub_id is what open_clip's ``hf-hub:`` will be given and the package's config names: ORG/NAME alone. A
    revision (``@``), a prefix (``:``) or a path is refused by the library function too, before anything is
    written."""
    from ernievil2torch.export.open_clip import export_open_clip

    with pytest.raises(InputError, match="--hub_id must be a Hub model id ORG/NAME"):
        export_open_clip(str(tiny_dir), str(tmp_path / "package"), hub_id=hub_id)
    assert not (tmp_path / "package").exists()


def test_the_onnx_and_openvino_checks_probe_padding_and_other_lengths_than_the_trace():
    """The ONNX and OpenVINO checks must see what a traced graph can get wrong: padded rows (the mask), another
    batch size and another length than the trace. The probes are what trace_and_check_batches documents."""
    from ernievil2torch.config import tiny_config
    from ernievil2torch.export.probes import trace_and_check_batches

    config = tiny_config()
    traced, checks = trace_and_check_batches(config)
    length = min(16, config.text.max_position_embeddings)
    assert traced.input_ids.shape == (2, length) and traced.attention_mask[0].all()
    assert traced.attention_mask[1].tolist() == [1] * (length // 2) + [0] * (length - length // 2)
    checks = list(checks)
    assert [c.input_ids.shape for c in checks] == [(1, length + 3), (3, length + 3)]
    for check in checks:
        last_ids, last_mask = check.input_ids[-1], check.attention_mask[-1]
        assert last_mask.tolist() == [1] * 5 + [0] * (length - 2)
        assert (last_ids[5:] == config.text.pad_token_id).all() and (last_ids[:5] >= 3).all()
        assert check.attention_mask[:-1].all() and check.pixel_values.shape[0] == check.input_ids.shape[0]
