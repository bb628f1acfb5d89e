"""The way back to Paddle: ``ernievil2 export MODEL OUT.pdparams --format paddle --layout official|paddlenlp``.

* round trip: an official or a PaddleNLP file converted to PyTorch and exported again gives back every array bit
  for bit (the official file's unused ``visual.classfy`` head aside), tiny and full size;
* the official export's key set is the Paddle reference's (official ``MultiModalModel`` layout) and loads strictly;
* ``paddle.load`` reads both exports; PaddleNLP 2.8.1's ``ErnieViLModel.set_state_dict`` reports no missing and no
  unexpected key for the PaddleNLP export and holds the file's values;
* the pickle holds nothing but dicts, strings and arrays, and is written atomically;
* a model fine-tuned here computes the same features in Paddle (reference and PaddleNLP) as in PyTorch.
"""
from __future__ import annotations

import json
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from ernievil2torch.config import ErnieViL2Config, base_config, tiny_config
from ernievil2torch.constants import OFFICIAL_DROPPED_KEYS
from ernievil2torch.conversion import convert_checkpoint
from ernievil2torch.conversion.pdparams import STRUCTURE_KEY, load_pdparams, save_pdparams
from ernievil2torch.errors import OutputExistsError
from ernievil2torch.export import export_paddle
from ernievil2torch.modeling import ErnieViL2
from ernievil2torch.verify import parity
from ernievil2torch.verify.synthetic import layout_state, random_model
from helpers import run_oracle, require_module

CONFIGS = {"tiny": tiny_config, "base": base_config}


def round_trip(tmp_path: Path, size: str, layout: str):
    config = CONFIGS[size]()
    source = layout_state(config, layout, seed=3)
    src = save_pdparams(source, tmp_path / "source.pdparams")
    convert_checkpoint(src, tmp_path / "converted")
    summary = export_paddle(tmp_path / "converted", tmp_path / "back.pdparams", layout=layout).summary()
    back = load_pdparams(tmp_path / "back.pdparams")
    expected = {k: v for k, v in source.items() if not any(re.fullmatch(p, k) for p in OFFICIAL_DROPPED_KEYS)}
    return summary, expected, back


@pytest.mark.parametrize("layout", ["official", "paddlenlp"])
def test_round_trip_is_exact_tiny(tmp_path, layout):
    summary, expected, back = round_trip(tmp_path, "tiny", layout)
    assert set(back) == set(expected)
    for key, array in expected.items():
        assert back[key].dtype == array.dtype and back[key].shape == array.shape, key
        assert np.array_equal(back[key], array), key
    assert f"{len(expected)} arrays" in summary and layout in summary


@pytest.mark.fullsize
@pytest.mark.parametrize("layout", ["official", "paddlenlp"])
def test_round_trip_is_exact_full_size(tmp_path, layout):
    _, expected, back = round_trip(tmp_path, "base", layout)
    assert set(back) == set(expected) and len(back) == {"official": 350, "paddlenlp": 398}[layout]
    assert all(np.array_equal(back[k], v) and back[k].dtype == v.dtype for k, v in expected.items())


def test_the_pickle_holds_only_dicts_strings_and_arrays(tmp_path):
    random_model(tiny_config(), seed=1).save_pretrained(tmp_path / "m")
    export_paddle(tmp_path / "m", tmp_path / "x.pdparams")
    assert (tmp_path / "x.pdparams").read_bytes()[:2] == b"\x80\x04"  # protocol 4, as paddle.save
    found = set()

    class Recording(pickle.Unpickler):
        def find_class(self, module, name):
            found.add((module, name))
            return super().find_class(module, name)

    with (tmp_path / "x.pdparams").open("rb") as handle:
        state = Recording(handle).load()
    assert found <= {("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "_reconstruct"),
                     ("numpy", "ndarray"), ("numpy", "dtype")}, found
    assert isinstance(state, dict) and isinstance(state.pop(STRUCTURE_KEY), dict)
    assert all(isinstance(k, str) and type(v) is np.ndarray for k, v in state.items())


def test_existing_output_is_refused_and_kept(tmp_path):
    random_model(tiny_config(), seed=1).save_pretrained(tmp_path / "m")
    (tmp_path / "x.pdparams").write_bytes(b"previous")
    with pytest.raises(OutputExistsError, match="--overwrite"):
        export_paddle(tmp_path / "m", tmp_path / "x.pdparams")
    assert (tmp_path / "x.pdparams").read_bytes() == b"previous"
    export_paddle(tmp_path / "m", tmp_path / "x.pdparams", overwrite=True)
    assert load_pdparams(tmp_path / "x.pdparams")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m", "x.pdparams"]  # no temporary file left


def test_cli_export_paddle(tmp_path):
    from ernievil2torch import cli

    random_model(tiny_config(), seed=1).save_pretrained(tmp_path / "m")
    for layout in ("official", "paddlenlp"):
        cli.export(str(tmp_path / "m"), str(tmp_path / f"{layout}.pdparams"), format="paddle", layout=layout)
        assert load_pdparams(tmp_path / f"{layout}.pdparams")
    with pytest.raises(Exception, match="--layout"):
        cli.export(str(tmp_path / "m"), str(tmp_path / "x.pdparams"), format="paddle", layout="hf")


# ---- Paddle itself ---------------------------------------------------------------------------------------------
def exported_model(tmp_path: Path, config: ErnieViL2Config, seed: int = 1) -> Path:
    random_model(config, seed=seed).save_pretrained(tmp_path / "m")
    return tmp_path / "m"


@pytest.mark.parametrize("has_temperature", [True, False])
def test_official_export_has_the_official_key_set_and_loads_strictly(tmp_path, has_temperature):
    paddle = require_module("paddle")
    import dataclasses

    from ernievil2torch.verify.paddle_reference import PaddleErnieViL2, ReferenceSizes, load_official_state

    config = dataclasses.replace(tiny_config(), has_temperature=has_temperature)
    export_paddle(exported_model(tmp_path, config), tmp_path / "official.pdparams", layout="official")
    loaded = paddle.load(str(tmp_path / "official.pdparams"))
    # the reference's own module structure defines the official key set; only its sizes come from the file
    reference = PaddleErnieViL2(ReferenceSizes.from_state({k: v.numpy() for k, v in loaded.items()}))
    assert set(loaded) == set(reference.state_dict())
    missing, unexpected = reference.set_state_dict(loaded)
    assert list(missing) == [] and list(unexpected) == []
    load_official_state(reference, {k: v.numpy() for k, v in loaded.items()})  # the strict loader agrees


def test_paddle_load_reads_both_exports(tmp_path):
    paddle = require_module("paddle")
    model_dir = exported_model(tmp_path, tiny_config())
    for layout in ("official", "paddlenlp"):
        path = tmp_path / f"{layout}.pdparams"
        export_paddle(model_dir, path, layout=layout)
        ours = load_pdparams(path)
        theirs = paddle.load(str(path))
        assert set(theirs) == set(ours)
        assert all(np.array_equal(theirs[k].numpy(), v) for k, v in ours.items())


@pytest.mark.oracle
@pytest.mark.parametrize("size", ["tiny", pytest.param("base", marks=pytest.mark.fullsize)])
def test_paddlenlp_loads_the_paddlenlp_export_strictly(tmp_path, size):
    config = CONFIGS[size]()
    export_paddle(exported_model(tmp_path, config), tmp_path / "model_state.pdparams", layout="paddlenlp")
    (tmp_path / "config.json").write_text(json.dumps(config.to_dict()), encoding="utf-8")
    run_oracle("paddlenlp_load_state.py", None, "--params", tmp_path / "model_state.pdparams",
               "--config", tmp_path / "config.json", "--out", tmp_path / "out.json")
    result = json.loads((tmp_path / "out.json").read_text())
    print(f"\nPaddleNLP set_state_dict of the {size} export: {result['num_file_keys']} keys, missing "
          f"{result['missing']}, unexpected {result['unexpected']}, values differing {result['unequal']}")
    assert result["missing"] == [] and result["unexpected"] == [] and result["unequal"] == []
    assert result["num_file_keys"] == result["num_model_keys"] == (398 if size == "base" else 78)


# ---- a fine-tuned model runs in Paddle ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def finetuned(tmp_path_factory):
    """A tiny model fine-tuned for a few steps on the drawn shapes (its weights moved away from the random ones)."""
    from ernievil2torch.training import finetune
    from shapes import shapes_setup

    root = tmp_path_factory.mktemp("finetuned")
    setup = shapes_setup(root, images_per_caption=2)
    result = finetune(setup.model, setup.train, root / "run", images=setup.train_images, max_steps=3,
                      batch_size=8, lr=1e-3, warmup_steps=0, num_workers=0, progress=False,
                      gradient_checkpointing=False, eval_at_start=False)
    before = ErnieViL2.from_pretrained(setup.model).state_dict()
    after = ErnieViL2.from_pretrained(result.final).state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    return result.final


def test_finetuned_model_runs_in_the_paddle_reference(finetuned, tmp_path):
    require_module("paddle")
    from ernievil2torch.verify.paddle_reference import run_reference

    export_paddle(finetuned, tmp_path / "official.pdparams", layout="official")
    model = ErnieViL2.from_pretrained(finetuned)
    inputs = parity.synthetic_inputs(model.config, seed=4)
    reference = run_reference(load_pdparams(tmp_path / "official.pdparams"), inputs.pixel_values, inputs.input_ids)
    figures = parity.compare(parity.run_torch(model, inputs), reference)
    print(f"\nfine-tuned model, PyTorch vs Paddle reference on its official export:\n{figures.table()}")
    assert figures.passed(), figures.table()


@pytest.mark.oracle
def test_finetuned_model_runs_in_paddlenlp(finetuned, tmp_path):
    export_paddle(finetuned, tmp_path / "model_state.pdparams", layout="paddlenlp")
    model = ErnieViL2.from_pretrained(finetuned)
    inputs = parity.synthetic_inputs(model.config, seed=4)
    np.savez(tmp_path / "inputs.npz", pixel_values=inputs.pixel_values, input_ids=inputs.input_ids)
    (tmp_path / "config.json").write_text(json.dumps(model.config.to_dict()), encoding="utf-8")
    run_oracle("paddlenlp_model.py", None, "--inputs", tmp_path / "inputs.npz", "--params",
               tmp_path / "model_state.pdparams", "--config", tmp_path / "config.json", "--out",
               tmp_path / "out.npz", "--text-ln-eps", "1e-5")
    with np.load(tmp_path / "out.npz") as z:
        reference = {k: z[k] for k in ("image_features", "text_features", "logits_per_image")}
    figures = parity.compare(parity.run_torch(model, inputs), reference)
    print(f"\nfine-tuned model, PyTorch vs PaddleNLP on its PaddleNLP export:\n{figures.table()}")
    assert figures.passed(), figures.table()
