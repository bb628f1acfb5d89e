"""export_hf / export_onnx / export_openvino: stock HF models, ONNX Runtime and OpenVINO reproduce our features, tiny and full size.

Every comparison asserts max abs diff <= ``EXPORT_ATOL`` (the project's feature bound, ``verify.parity``) on padded
text batches and random images; README.md quotes that bound. The measured figures are printed (``-s``).
"""
from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ernievil2torch import ErnieViL2
from ernievil2torch.export import export_hf, export_onnx, export_openvino
from ernievil2torch.verify.parity import FEATURE_ATOL
from ernievil2torch.verify.synthetic import random_model

from helpers import require_module, shared_file

EXPORT_ATOL = FEATURE_ATOL  # every export comparison below, tiny and full size


def _import_transformers():
    """Import transformers; a broken torchvision (e.g. a CUDA build beside CPU torch) is hidden from it."""
    try:
        import torchvision  # noqa: F401
    except Exception:  # RuntimeError "operator torchvision::nms does not exist" and the like
        for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
            del sys.modules[name]
        sys.modules["torchvision"] = None  # find_spec -> None: transformers treats it as absent
    return require_module("transformers")


@pytest.fixture(scope="module")
def model_dir(model_folder):
    return model_folder("tiny", seed=3)


@pytest.fixture(scope="module")
def model(model_dir):
    return ErnieViL2.from_pretrained(model_dir)


@pytest.fixture(scope="module")
def hf_dir(model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("hf") / "out"
    export_hf(str(model_dir), str(out))
    return out


def _padded_batch(cfg, batch=5, length=12, seed=0):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, cfg.text.vocab_size, (batch, length), generator=gen)
    mask = torch.ones_like(ids)
    keeps = [length, 5, 2, length - 1, 3, 1, length]
    for row in range(batch):
        keep = min(keeps[row % len(keeps)], length)
        ids[row, keep:] = 0
        mask[row, keep:] = 0
    return ids, mask


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_hf_ernie_matches_text_features(model, hf_dir, attn):
    transformers = _import_transformers()
    hf, info = transformers.ErnieModel.from_pretrained(hf_dir / "text", output_loading_info=True,
                                                       attn_implementation=attn)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert hf.config.type_vocab_size == 1 and hf.config.layer_norm_eps == 1e-5 and hf.config.hidden_act == "gelu"
    assert torch.count_nonzero(hf.embeddings.token_type_embeddings.weight) == 0
    ids, mask = _padded_batch(model.config)
    with torch.no_grad():
        ours = model.encode_text(ids, mask)
        theirs = hf.eval()(input_ids=ids, attention_mask=mask).pooler_output
    diff = (ours - theirs).abs().max().item()
    print(f"HF ErnieModel ({attn}) vs ours, padded batch: max abs diff {diff:.3g}")
    assert diff <= EXPORT_ATOL


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_hf_clip_vision_matches_image_features(model, hf_dir, attn):
    transformers = _import_transformers()
    hf, info = transformers.CLIPVisionModel.from_pretrained(hf_dir / "vision", output_loading_info=True,
                                                            attn_implementation=attn)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    cfg = model.config.vision
    assert hf.config.hidden_act == "quick_gelu" and hf.config.layer_norm_eps == 1e-6
    pixels = torch.randn(3, 3, cfg.image_size, cfg.image_size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = model.encode_image(pixels)
        theirs = hf.eval()(pixel_values=pixels).pooler_output
    diff = (ours - theirs).abs().max().item()
    print(f"HF CLIPVisionModel ({attn}) vs ours: max abs diff {diff:.3g}")
    assert diff <= EXPORT_ATOL


def test_hf_tokenizer_files(model_dir, tmp_path):
    transformers = _import_transformers()
    from ernievil2torch.processing.tokenizer import ErnieViL2Tokenizer

    vocab = shared_file("vocab.txt")
    hf_dir = tmp_path / "hf"
    export_hf(str(model_dir), str(hf_dir), vocab=str(vocab))
    lines = (hf_dir / "text" / "vocab.txt").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 39980 and lines[12084] == lines[18005] == "$"
    config = json.loads((hf_dir / "text" / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert config["model_max_length"] == 48
    hf_tok = transformers.AutoTokenizer.from_pretrained(hf_dir / "text")
    ours = ErnieViL2Tokenizer(vocab)
    texts = ["一只猫的照片", "一张狗的照片", "赛博朋克边缘行者", "A photo of a Cat, $5!", "Café 北京 2024年"]
    want = ours(texts, return_tensors=None)
    got = hf_tok(texts, padding="max_length", max_length=48, truncation=True)
    assert got["input_ids"] == want["input_ids"]
    assert got["attention_mask"] == want["attention_mask"]
    assert want["input_ids"][0][:8] == [1, 7, 297, 1821, 5, 575, 433, 2]
    assert hf_tok.convert_tokens_to_ids("$") == 18005 and hf_tok.unk_token_id == 39979


def test_export_hf_refuses_existing_dir(model_dir, hf_dir):
    with pytest.raises(FileExistsError):
        export_hf(str(model_dir), str(hf_dir))


def onnx_max_diff(model: ErnieViL2, out: Path, shapes) -> float:
    """Max abs diff of ONNX Runtime against the model over padded text batches and random images."""
    ort = require_module("onnxruntime")
    require_module("onnx")
    text = ort.InferenceSession(str(out / "text_encoder.onnx"), providers=["CPUExecutionProvider"])
    image = ort.InferenceSession(str(out / "image_encoder.onnx"), providers=["CPUExecutionProvider"])
    cfg = model.config
    worst = 0.0
    for batch, length in shapes:
        ids, mask = _padded_batch(cfg, batch=batch, length=length, seed=batch)
        pixels = torch.randn(batch, 3, cfg.vision.image_size, cfg.vision.image_size,
                             generator=torch.Generator().manual_seed(batch))
        with torch.no_grad():
            want_t = model.encode_text(ids, mask).numpy()
            want_i = model.encode_image(pixels).numpy()
        got_t = text.run(None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})[0]
        got_i = image.run(None, {"pixel_values": pixels.numpy()})[0]
        assert got_t.shape == (batch, cfg.text.hidden_size) and got_i.shape == (batch, cfg.vision.hidden_size)
        worst = max(worst, float(np.abs(got_t - want_t).max()), float(np.abs(got_i - want_i).max()))
    return worst


def test_onnx_runtime_matches(model_dir, model, tmp_path):
    out = tmp_path / "onnx"
    export_onnx(str(model_dir), str(out), opset=17)
    worst = onnx_max_diff(model, out, [(1, 48), (7, 11), (7, 48)])
    print(f"ONNX Runtime vs ours (batch 1 and 7, lengths 11/48, padded rows): max abs diff {worst:.3g}")
    assert worst <= EXPORT_ATOL


@pytest.fixture(scope="module")
def base_model_dir(tmp_path_factory):
    """The released Base dims with random weights, saved once for the full-size export tests."""
    from ernievil2torch import base_config

    path = tmp_path_factory.mktemp("export_base") / "base"
    random_model(base_config(), seed=0).save_pretrained(path)
    return path


@pytest.mark.fullsize
def test_full_size_hf_export(base_model_dir, tmp_path):
    """Released Base dims, random weights, padded text batch."""
    transformers = _import_transformers()
    model = ErnieViL2.from_pretrained(base_model_dir)
    cfg = model.config
    export_hf(str(base_model_dir), str(tmp_path / "hf"))
    ids, mask = _padded_batch(cfg, batch=3, length=48)
    pixels = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        hf_text = transformers.ErnieModel.from_pretrained(tmp_path / "hf" / "text").eval()
        d_text = (model.encode_text(ids, mask) - hf_text(input_ids=ids, attention_mask=mask).pooler_output).abs().max()
        del hf_text
        hf_vision = transformers.CLIPVisionModel.from_pretrained(tmp_path / "hf" / "vision").eval()
        d_image = (model.encode_image(pixels) - hf_vision(pixel_values=pixels).pooler_output).abs().max()
    print(f"full size: HF ErnieModel {d_text.item():.3g}, HF CLIPVisionModel {d_image.item():.3g}")
    assert d_text.item() <= EXPORT_ATOL and d_image.item() <= EXPORT_ATOL


@pytest.mark.fullsize
def test_full_size_onnx_export(base_model_dir, tmp_path):
    """Released Base dims (two graphs of ~450 / ~330 MB), padded text batch of 48 tokens, random images."""
    model = ErnieViL2.from_pretrained(base_model_dir)
    export_onnx(str(base_model_dir), str(tmp_path / "onnx"), check=False)
    worst = onnx_max_diff(model, tmp_path / "onnx", [(3, 48)])
    print(f"full size: ONNX Runtime vs ours (3 x 48 tokens, padded rows; 3 images): max abs diff {worst:.3g}")
    assert worst <= EXPORT_ATOL


def openvino_diffs(model: ErnieViL2, out: Path, shapes, hint):
    """(max abs diff, min row cosine) of OpenVINO's CPU plugin compiled with ``hint`` (None: the CPU's default)
    against the model, over padded text batches and random images."""
    ov = require_module("openvino")
    core = ov.Core()
    config = {"INFERENCE_PRECISION_HINT": hint} if hint else {}
    text = core.compile_model(str(out / "text_encoder.xml"), "CPU", config)
    image = core.compile_model(str(out / "image_encoder.xml"), "CPU", config)
    cfg = model.config
    worst, cosine = 0.0, 1.0
    for batch, length in shapes:
        ids, mask = _padded_batch(cfg, batch=batch, length=length, seed=batch)
        pixels = torch.randn(batch, 3, cfg.vision.image_size, cfg.vision.image_size,
                             generator=torch.Generator().manual_seed(batch))
        with torch.no_grad():
            want_t, want_i = model.encode_text(ids, mask), model.encode_image(pixels)
        got_t = torch.from_numpy(text({"input_ids": ids.numpy(), "attention_mask": mask.numpy()})["text_embeds"])
        got_i = torch.from_numpy(image({"pixel_values": pixels.numpy()})["image_embeds"])
        assert got_t.shape == want_t.shape and got_i.shape == want_i.shape
        for got, want in ((got_t, want_t), (got_i, want_i)):
            worst = max(worst, float((got - want).abs().max()))
            cosine = min(cosine, float(torch.nn.functional.cosine_similarity(got.double(), want.double()).min()))
    return worst, cosine


def _assert_float32_weights(out: Path):
    """The IR keeps float32 constants (no fp16 compression on save)."""
    for name in ("text_encoder.xml", "image_encoder.xml"):
        xml = (out / name).read_text(encoding="utf-8")
        assert 'element_type="f32"' in xml and 'element_type="f16"' not in xml, name


def test_openvino_export_matches(model_dir, model, tmp_path):
    require_module("openvino")
    out = tmp_path / "ov"
    result = export_openvino(str(model_dir), str(out))
    assert result.format == "openvino" and result.max_abs_diff is not None and result.max_abs_diff <= EXPORT_ATOL
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "image_encoder.bin", "image_encoder.xml",
                                                     "text_encoder.bin", "text_encoder.xml"]
    _assert_float32_weights(out)
    worst, _ = openvino_diffs(model, out, [(1, 48), (7, 11), (7, 48)], "f32")
    _, cosine = openvino_diffs(model, out, [(1, 48), (7, 11)], None)
    print(f"OpenVINO vs ours (batch 1 and 7, lengths 11/48, padded rows): f32 hint max abs diff {worst:.3g}; "
          f"default hint min cosine {cosine:.6f}")
    assert worst <= EXPORT_ATOL and cosine >= 0.999


def test_openvino_export_publishes_nothing_when_its_check_fails(model_dir, tmp_path, monkeypatch):
    require_module("openvino")
    from ernievil2torch.errors import ErnieViL2Error
    from ernievil2torch.export import openvino as ov_export

    monkeypatch.setattr(ov_export, "_check", lambda *args: (1.0, 0.5))
    with pytest.raises(ErnieViL2Error, match="OpenVINO \\(f32 hint\\) differs from PyTorch by 1"):
        export_openvino(str(model_dir), str(tmp_path / "ov"))
    assert list(tmp_path.iterdir()) == []


def test_openvino_export_through_the_cli(model_dir, tmp_path, capsys):
    require_module("openvino")
    from ernievil2torch import cli

    out = tmp_path / "ov"
    cli.run_command(cli.COMMANDS, name="ernievil2", argv=["export", str(model_dir), str(out), "--format", "openvino"])
    printed = capsys.readouterr().out
    assert "openvino check passed: f32 hint max abs diff" in printed and (out / "image_encoder.xml").is_file()


@pytest.mark.fullsize
def test_full_size_openvino_export(base_model_dir, tmp_path):
    """Released Base dims, float32 IR; the f32 hint within the export tolerance, the CPU's default hint cosine."""
    require_module("openvino")
    model = ErnieViL2.from_pretrained(base_model_dir)
    export_openvino(str(base_model_dir), str(tmp_path / "ov"), check=False)
    _assert_float32_weights(tmp_path / "ov")
    worst, _ = openvino_diffs(model, tmp_path / "ov", [(3, 48)], "f32")
    _, cosine = openvino_diffs(model, tmp_path / "ov", [(3, 48)], None)
    print(f"full size: OpenVINO f32 hint vs ours (3 x 48 tokens, padded rows; 3 images): max abs diff {worst:.3g}; "
          f"default hint min cosine {cosine:.6f}")
    assert worst <= EXPORT_ATOL and cosine >= 0.999


# ---- the registry of formats, and what an exporter returns -------------------------------------------------------
def test_export_hf_returns_a_result_and_prints_nothing(model_dir, tmp_path, capsys):
    from ernievil2torch.export import ExportResult

    result = export_hf(str(model_dir), str(tmp_path / "hf"))
    assert capsys.readouterr() == ("", "")
    assert isinstance(result, ExportResult) and result.format == "hf" and result.out == tmp_path / "hf"
    assert result.notes == [f"note: no vocab.txt in {model_dir}; tokenizer files not written (pass --vocab)"]
    assert result.summary().splitlines() == [*result.notes, f"wrote {tmp_path / 'hf'}/text (ErnieModel) and "
                                                            f"{tmp_path / 'hf'}/vision (CLIPVisionModel)"]


def test_the_registry_is_what_the_cli_offers():
    from ernievil2torch.cli import COMMANDS
    from ernievil2torch.export import EXPORTERS

    parameters = {p.name: p for p in COMMANDS["export"].parameters()}
    assert parameters["format"].check.rule == f"one of {', '.join(EXPORTERS)}"
    help_text = " ".join(COMMANDS["export"].function().__doc__.split())
    for exporter in EXPORTERS.values():
        assert set(exporter.options) <= set(parameters), exporter.format
        module, _, name = exporter.target.partition(":")
        assert callable(getattr(importlib.import_module(module), name)), exporter.target
        assert f"{exporter.format}: {exporter.help}" in help_text
        if exporter.requires:
            assert exporter.extra, f"{exporter.format} needs {exporter.requires}: name the pip extra"


def test_a_missing_extra_is_one_error_line_naming_it(model_dir, tmp_path, monkeypatch, capsys):
    from ernievil2torch import cli
    from ernievil2torch.export import registry

    real = registry.importlib.util.find_spec
    monkeypatch.setattr(registry.importlib.util, "find_spec", lambda name: None if name == "onnx" else real(name))
    with pytest.raises(SystemExit) as exited:
        cli.run_command(cli.COMMANDS, name="ernievil2", argv=["export", str(model_dir), str(tmp_path / "onnx"),
                                                               "--format", "onnx"])
    assert exited.value.code == cli.EXIT_BAD_INPUT
    assert capsys.readouterr().err == ("error: --format onnx needs onnx: pip install 'ernievil2torch[export]'\n")
    assert not (tmp_path / "onnx").exists()
