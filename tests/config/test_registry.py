"""The model registry: named sizes, parameter shapes from the config, name resolution, dtype names in the converter,
and a model size added by registering one configuration (the acceptance test at the bottom)."""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ernievil2torch import create_model, load_pretrained
from ernievil2torch.config import (CUSTOM_MODEL_TYPE, RELEASED_MODEL_TYPE, ErnieViL2Config, get_model_config,
                                   list_models, match_shapes, parameter_shapes, register_model, resolve_model,
                                   tiny_config, unregister_model)
from ernievil2torch.constants import CONFIG_NAME
from ernievil2torch.conversion import convert, convert_checkpoint, save_pdparams
from ernievil2torch.conversion.layouts import LAYOUTS, infer_config
from ernievil2torch.errors import CheckpointError, InputError, KeyMapError
from ernievil2torch.modeling import ErnieViL2
from ernievil2torch.storage.model_dir import read_model_dir
from ernievil2torch.verify.synthetic import layout_state, random_state

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def registered():
    """``registered(name, config)`` registers for the test and unregisters in teardown, whatever happens."""
    names = []

    def add(name: str, config: ErnieViL2Config) -> ErnieViL2Config:
        stored = register_model(name, config)
        names.append(name)
        return stored

    yield add
    for name in names:
        if name in list_models():
            unregister_model(name)


def layout_shapes(layout: str, config: ErnieViL2Config) -> dict:
    return {k: v.shape for k, v in layout_state(config, layout, seed=0, with_classifier_head=False).items()}


# ---- the registry -----------------------------------------------------------------------------------------------
def test_built_in_entries():
    assert list_models() == ["base", "tiny", "tiny224"]
    base, tiny = get_model_config("base"), get_model_config("tiny")
    assert base.name == "base" and base.model_type == RELEASED_MODEL_TYPE
    assert dataclasses.replace(base, name=None) == ErnieViL2Config()  # the defaults are the released model
    assert tiny.name == "tiny" and tiny.model_type == CUSTOM_MODEL_TYPE and tiny.text.hidden_size == 128
    assert tiny_config() == tiny
    tiny224 = get_model_config("tiny224")
    assert (tiny224.vision.image_size, tiny224.vision.patch_size, tiny224.text.vocab_size) == (224, 16, 40000)


def test_a_config_json_without_a_name_loads_as_before(tiny_dir, tmp_path):
    """Directories converted before configs carried their registry name: no "name" key, same model."""
    import shutil

    old = tmp_path / "old"
    shutil.copytree(tiny_dir, old)
    data = json.loads((old / CONFIG_NAME).read_text(encoding="utf-8"))
    del data["name"]
    (old / CONFIG_NAME).write_text(json.dumps(data), encoding="utf-8")
    before, after = create_model(tiny_dir), create_model(old)
    assert after.config.name is None and after.config == dataclasses.replace(before.config, name=None)
    for got, want in zip(features(after), features(before)):
        assert torch.equal(got, want)


def test_unknown_name_lists_the_registered_ones():
    with pytest.raises(InputError, match="unknown model name 'large'; registered: base, tiny, tiny224"):
        get_model_config("large")


def test_register_checks_name_config_and_duplicates(registered):
    with pytest.raises(InputError, match="already registered"):
        register_model("tiny", tiny_config())
    for bad in ("", "org/model", "../x", "-x", "a b"):
        with pytest.raises(InputError, match="must be letters"):
            register_model(bad, tiny_config())
    broken = dataclasses.replace(tiny_config(), text=dataclasses.replace(tiny_config().text, num_heads=3))
    with pytest.raises(InputError, match="model 'odd': hidden_size 128 is not a multiple of num_heads 3"):
        register_model("odd", broken)
    with pytest.raises(InputError, match="needs an ErnieViL2Config"):
        register_model("dict", {"text": {}})
    assert list_models() == ["base", "tiny", "tiny224"]
    with pytest.raises(InputError, match="no model named 'odd'"):
        unregister_model("odd")


def test_register_as_a_decorator_labels_the_entry(registered):
    @register_model("small")
    def small() -> ErnieViL2Config:
        return ErnieViL2Config(text=dataclasses.replace(tiny_config().text, num_layers=1))

    try:
        assert small().name is None  # the factory is returned unchanged
        stored = get_model_config("small")
        assert stored.name == "small" and stored.model_type == CUSTOM_MODEL_TYPE  # only "base" is the release
        assert stored.text.num_layers == 1
    finally:
        unregister_model("small")
    assert "small" not in list_models()


@pytest.mark.parametrize("name", list_models())
def test_parameter_shapes_are_the_models_state_dict_for_every_registered_config(name):
    for config in (get_model_config(name), dataclasses.replace(get_model_config(name), has_temperature=False)):
        with torch.device("meta"):
            model = ErnieViL2(config)
        assert list(parameter_shapes(config).items()) == [(k, tuple(t.shape)) for k, t in model.state_dict().items()]


def test_parameter_shapes_need_no_torch():
    script = ("import sys\nfrom ernievil2torch.config import parameter_shapes, get_model_config\n"
              "assert len(parameter_shapes(get_model_config('base'))) == 302\n"
              "assert 'torch' not in sys.modules and 'numpy' not in sys.modules\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=120,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("name", ["base", "tiny", "tiny224"])
def test_a_checkpoint_resolves_to_its_registered_name(layout, name):
    inferred = infer_config(LAYOUTS[layout], layout_shapes(layout, get_model_config(name)))
    assert inferred == get_model_config(name)


def test_a_size_no_entry_has_is_custom_and_unnamed():
    config = dataclasses.replace(tiny_config(), text=dataclasses.replace(tiny_config().text, num_layers=3))
    inferred = infer_config(LAYOUTS["official"], layout_shapes("official", config))
    assert inferred.name is None and inferred.model_type == CUSTOM_MODEL_TYPE and inferred.text.num_layers == 3
    assert match_shapes(parameter_shapes(config)) is None


def test_two_entries_with_the_same_shapes_are_ambiguous(registered):
    registered("tiny-4heads", dataclasses.replace(
        tiny_config(), text=dataclasses.replace(tiny_config().text, num_heads=4)))
    with pytest.raises(KeyMapError, match=r"several registered models \(tiny, tiny-4heads\)"):
        infer_config(LAYOUTS["official"], layout_shapes("official", tiny_config()))


def test_naming_the_model_settles_an_ambiguity(registered, tmp_path):
    four = registered("tiny-4heads", dataclasses.replace(
        tiny_config(), text=dataclasses.replace(tiny_config().text, num_heads=4)))
    src = save_pdparams(layout_state(tiny_config(), "official", seed=1), tmp_path / "tiny.pdparams")
    with pytest.raises(KeyMapError, match="several registered models"):
        convert_checkpoint(src, tmp_path / "guess")
    assert not (tmp_path / "guess").exists()
    assert convert_checkpoint(src, tmp_path / "four", config="tiny-4heads").config == four
    assert convert_checkpoint(src, tmp_path / "two", config="tiny").config == tiny_config()
    assert read_model_dir(tmp_path / "four")[0] == four
    state = layout_state(tiny_config(), "official", seed=1)
    del state["contrastive_loss_mm.temperature_b"]  # a name gives the architecture; the file, the temperature
    plain = save_pdparams(state, tmp_path / "plain.pdparams")
    assert convert_checkpoint(plain, tmp_path / "plain", config="tiny").config == dataclasses.replace(
        tiny_config(), has_temperature=False)


# ---- name resolution --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("registry")
    src = save_pdparams(layout_state(tiny_config(), "official", seed=2), root / "tiny.pdparams")
    convert_checkpoint(src, root / "converted")
    return root / "converted"


def test_a_local_directory_comes_before_a_registry_name(tiny_dir, tmp_path, monkeypatch):
    assert resolve_model("tiny").kind == "registry" and not resolve_model("tiny").has_weights
    monkeypatch.chdir(tmp_path)
    os.symlink(tiny_dir, tmp_path / "tiny")
    source = resolve_model("tiny")
    assert source.kind == "directory" and source.has_weights and source.path == Path("tiny")
    assert create_model("tiny").config == read_model_dir(tiny_dir)[0]


def test_an_unknown_name_is_one_clear_error(tmp_path, hub_cache):
    with pytest.raises(CheckpointError, match=r"not a converted model directory.*registered model name "
                                              r"\(base, tiny, tiny224\), nor a Hugging Face Hub id \(ORG/NAME\)"):
        resolve_model(str(tmp_path / "nowhere"))
    with pytest.raises(CheckpointError, match=r"no such path.*as a Hugging Face Hub id: PaddlePaddle/ernie_vil-2.0-"
                                              r"base-zh is not in the local Hugging Face cache"):
        create_model("PaddlePaddle/ernie_vil-2.0-base-zh")


def test_create_model_from_a_name_or_a_directory(tiny_dir):
    fresh = create_model("tiny", dtype="bf16")
    assert fresh.config == tiny_config() and fresh.dtype == torch.bfloat16 and not fresh.training
    loaded = create_model(tiny_dir)
    assert loaded.config.name == "tiny"
    expected = random_state(tiny_config(), seed=2)
    for key, tensor in loaded.state_dict().items():
        np.testing.assert_array_equal(tensor.numpy(), expected[key], err_msg=key)


def test_from_pretrained_refuses_a_name_without_weights():
    with pytest.raises(InputError, match="'tiny' is a registered model configuration without weights"):
        ErnieViL2.from_pretrained("tiny")
    with pytest.raises(InputError, match="without weights"):
        load_pretrained("base")


@pytest.mark.parametrize("spelling, dtype", [("bf16", torch.bfloat16), ("FP16", torch.float16),
                                             ("half", torch.float16), ("fp32", torch.float32)])
def test_load_pretrained_takes_every_dtype_spelling(tiny_dir, spelling, dtype):
    assert load_pretrained(tiny_dir, dtype=spelling).model.dtype == dtype


def test_a_bad_dtype_is_refused_before_the_directory_is_read(tiny_dir, monkeypatch):
    from ernievil2torch.modeling import model as model_module

    def never(*args, **kwargs):
        raise AssertionError("the directory was read")

    monkeypatch.setattr(model_module, "read_model_dir", never)
    with pytest.raises(InputError, match="dtype must be one of"):
        load_pretrained(tiny_dir, dtype="float64")


# ---- dtype names in the converter -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_file(tiny_dir) -> Path:
    return tiny_dir.parent / "tiny.pdparams"


@pytest.mark.parametrize("spelling, stored", [("bf16", torch.bfloat16), ("BFloat16", torch.bfloat16),
                                              ("fp16", torch.float16), ("half", torch.float16),
                                              ("fp32", torch.float32)])
def test_convert_accepts_every_dtype_spelling(tiny_file, tmp_path, spelling, stored):
    report = convert_checkpoint(tiny_file, tmp_path / "out", dtype=spelling)
    assert report.dtype == str(stored).replace("torch.", "")
    _, state = read_model_dir(tmp_path / "out")
    expected = random_state(tiny_config(), seed=2)
    for key, tensor in state.items():
        assert tensor.dtype == stored and torch.equal(tensor, torch.from_numpy(expected[key]).to(stored)), key


@pytest.mark.parametrize("arguments, message", [({"dtype": "float64"}, "dtype must be one of"),
                                                ({"dtype": "bf-16"}, "dtype must be one of"),
                                                ({"config": "large"}, "unknown model name 'large'")])
def test_bad_arguments_are_refused_before_the_file_is_opened(tiny_file, tmp_path, monkeypatch, arguments,
                                                              message):
    def never(*args, **kwargs):
        raise AssertionError("the checkpoint was opened")

    monkeypatch.setattr(convert, "load_pdparams", never)
    with pytest.raises(InputError, match=message):
        convert_checkpoint(tiny_file, tmp_path / "out", **arguments)
    assert not (tmp_path / "out").exists()


def test_convert_py_dtype_bf16(tiny_file, tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "convert.py"), "--src", str(tiny_file), "--dst",
                           str(tmp_path / "out"), "--dtype", "bf16"],
                          capture_output=True, text=True, timeout=300, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "bfloat16" in proc.stdout and "model           : tiny" in proc.stdout
    _, state = read_model_dir(tmp_path / "out")
    assert {t.dtype for t in state.values()} == {torch.bfloat16}
    bad = subprocess.run([sys.executable, str(REPO / "convert.py"), "--src", str(tiny_file),
                          "--dst", str(tmp_path / "out2"), "--dtype", "float64"],
                         capture_output=True, text=True, timeout=300, cwd=REPO,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert bad.returncode == 2 and "dtype must be one of" in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "out2").exists()


# ---- acceptance: a model size added by registering one configuration ---------------------------------------------
def unrevealed_config() -> ErnieViL2Config:
    """A size whose checkpoint cannot show what makes it differ: 4 text heads of 32 (not hidden / 64 = 2), the
    PaddleNLP text LayerNorm eps (1e-12, not 1e-5) and 8 vision heads of 16; three text layers, so its shapes
    are its own among the registered ones."""
    tiny = tiny_config()
    return dataclasses.replace(
        tiny, text=dataclasses.replace(tiny.text, num_layers=3, num_heads=4, layer_norm_eps=1e-12),
        vision=dataclasses.replace(tiny.vision, num_heads=8))


def features(model: ErnieViL2) -> tuple:
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randn(3, 3, 32, 32, generator=generator)
    ids = torch.randint(1, 120, (3, 9), generator=generator)
    ids[1, 6:] = 0  # padding in one row
    with torch.no_grad():
        return model.encode_image(pixels), model.encode_text(ids)


def test_a_registered_size_converts_and_loads_as_itself(registered, tmp_path):
    config = registered("tiny-heads", unrevealed_config())
    seed = 7
    reference = ErnieViL2(config)
    reference.load_state_dict({k: torch.from_numpy(v) for k, v in random_state(config, seed).items()})
    reference.eval()
    src = save_pdparams(layout_state(config, "official", seed=seed), tmp_path / "heads.pdparams")

    report = convert_checkpoint(src, tmp_path / "converted")
    assert report.config == config and report.config.name == "tiny-heads"
    assert "model           : tiny-heads (ernie_vil_2.0_custom, text 3 layers" in report.summary()
    assert "no registered model" not in report.summary()
    written = json.loads((tmp_path / "converted" / CONFIG_NAME).read_text(encoding="utf-8"))
    assert written["name"] == "tiny-heads" and written["text"]["num_heads"] == 4
    assert written["text"]["layer_norm_eps"] == 1e-12 and written["vision"]["num_heads"] == 8

    loaded = load_pretrained(tmp_path / "converted").model
    assert loaded.config == config
    for got, want in zip(features(loaded), features(reference)):
        assert torch.equal(got, want)

    # Without the entry, the same file converts as an unnamed size with hidden / 64 heads and the default eps:
    # a different network, so this test would catch a converter that ignored the registry.
    unregister_model("tiny-heads")
    report = convert_checkpoint(src, tmp_path / "guessed")
    guessed = report.config
    assert guessed.name is None and (guessed.text.num_heads, guessed.text.layer_norm_eps) == (2, 1e-5)
    assert "no registered model has these shapes" in report.summary()
    other = load_pretrained(tmp_path / "guessed").model
    for got, want in zip(features(other), features(reference)):
        assert (got - want).abs().max() > 1e-4  # far beyond float32 round-off (the registered one is exact)
