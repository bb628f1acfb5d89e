"""LoRA adapters (``--lora_rank``): merged equals adapted, every adapter acts on every path, only adapters train,
exact resume, bad input, and a learning test from a related base."""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
import torch

from ernievil2torch.config import tiny_config
from ernievil2torch.constants import BEST_DIR, CHECKPOINTS_DIR, FINAL_DIR, METRICS_LOG_NAME
from ernievil2torch.errors import CheckpointError, InputError
from ernievil2torch.modeling import ErnieViL2
from ernievil2torch.training import FinetuneSettings, Trainer, finetune
from ernievil2torch.training.checkpoints import list_checkpoints
from ernievil2torch.training.lora import (ADAPTER_DIR, TRAINABLE_NAME, add_adapters, load_trainable_state, lora_spec,
                                          merged_state_dict, parse_targets, trainable_state)
from ernievil2torch.verify.parity import synthetic_inputs
from ernievil2torch.verify.synthetic import random_state
from helpers import torch_threads
from shapes import shapes_setup

MERGE_ATOL_FP32 = 1e-5


@pytest.fixture
def single_thread():
    """The tiny model trains fastest on one thread."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return shapes_setup(tmp_path_factory.mktemp("shapes"), images_per_caption=2)


def lora_run(setup, out, **overrides):
    settings = dict(images=setup.train_images, batch_size=8, lr=1e-2, warmup_steps=1, max_steps=4, num_workers=0,
                    progress=False, gradient_checkpointing=False, eval_at_start=False, lora_rank=4, save_every=2,
                    keep_last=2)
    settings.update(overrides)
    return finetune(setup.model, setup.train, out, **settings)


@pytest.fixture(scope="module")
def trained(shapes, tmp_path_factory):
    """A short LoRA run (rank 4, every default target, text dropout 0.1 in the model's config, adapter dropout 0.1)."""
    out = tmp_path_factory.mktemp("lora") / "run"
    lora_run(shapes, out, lora_dropout=0.1)
    return out


def features(model: ErnieViL2, config, dtype=torch.float32, grad: bool = False):
    """Both towers' features of a fixed batch (the same dropout masks on every call in training mode)."""
    data = synthetic_inputs(config, seed=5, images=4, lengths=(5, 9, 3, 7))
    ids = torch.from_numpy(data.input_ids)
    torch.manual_seed(0)
    with torch.set_grad_enabled(grad):
        return (model.encode_image(torch.from_numpy(data.pixel_values).to(dtype)).detach(),
                model.encode_text(ids, (ids != 0).long()).detach())


def test_merged_model_equals_the_adapter_model(shapes, trained):
    """final/ (merged, a plain converted directory) against the base model with final/lora_adapter loaded by
    peft's own PeftModel: features within 1e-5 in float32, and within bf16 rounding in bf16 (no farther apart than
    the merged model's own bf16 features are from its float32 ones)."""
    from peft import PeftModel

    merged = ErnieViL2.from_pretrained(trained / FINAL_DIR)
    adapter_config = json.loads((trained / FINAL_DIR / ADAPTER_DIR / "adapter_config.json").read_text())
    assert adapter_config["r"] == 4 and adapter_config["peft_type"] == "LORA"
    adapted = PeftModel.from_pretrained(ErnieViL2.from_pretrained(shapes.model), trained / FINAL_DIR / ADAPTER_DIR)
    inner = adapted.base_model.model
    lora_b = [p for n, p in inner.named_parameters() if ".lora_B." in n]
    assert lora_b and all(float(p.abs().max()) > 0 for p in lora_b)  # trained, non-zero adapters
    with torch.no_grad():
        inner.temperature.copy_(merged.temperature)  # the temperature is no adapter: it trained alongside
    inner.eval()
    config = merged.config
    base = features(ErnieViL2.from_pretrained(shapes.model), config)
    for a, b, c in zip(features(merged, config), features(inner, config), base):
        assert float((a - b).abs().max()) <= MERGE_ATOL_FP32
        assert float((a - c).abs().max()) > 1e-3  # the adapters do change the features
    merged16, inner16 = merged.to(torch.bfloat16), inner.to(torch.bfloat16)
    fp32 = features(ErnieViL2.from_pretrained(trained / FINAL_DIR), config)
    for a, b, ref in zip(features(merged16, config, torch.bfloat16), features(inner16, config, torch.bfloat16), fp32):
        rounding = float((a.float() - ref).abs().max())
        assert float((a.float() - b.float()).abs().max()) <= 2 * rounding


def check_merged_with_adapter_beside(folder, base, rank: int) -> None:
    """``folder`` (a run's ``final/`` or ``best/``) is a plain converted directory, the adapters merged (no
    ``.lora_``/``base_layer`` key; the normal loader reads it), with beside it the ``peft`` adapter of rank
    ``rank`` naming ``base``: that adapter, loaded onto ``base`` by peft's own ``PeftModel``, gives the folder's
    features within 1e-5 in float32 (so it is this folder's adapter, not another step's), and is non-zero."""
    from peft import PeftModel

    merged = ErnieViL2.from_pretrained(folder)
    assert not any(".lora_" in k or "base_layer" in k for k in merged.state_dict())
    adapter_config = json.loads((folder / ADAPTER_DIR / "adapter_config.json").read_text())
    assert adapter_config["r"] == rank and adapter_config["peft_type"] == "LORA"
    assert Path(adapter_config["base_model_name_or_path"]).resolve() == Path(base).resolve()
    adapted = PeftModel.from_pretrained(ErnieViL2.from_pretrained(base), folder / ADAPTER_DIR)
    inner = adapted.base_model.model
    assert all(float(p.abs().max()) > 0 for n, p in inner.named_parameters() if ".lora_B." in n)
    with torch.no_grad():
        inner.temperature.copy_(merged.temperature)  # the temperature is no adapter: the merged weights hold it
    merged.eval(), inner.eval()
    for a, b in zip(features(merged, merged.config), features(inner, merged.config)):
        assert float((a - b).abs().max()) <= MERGE_ATOL_FP32


def adapted_tiny(rank: int = 4, targets: str = "qkv,out_proj,fc1,fc2,text.pooler") -> ErnieViL2:
    config = tiny_config()
    model = ErnieViL2(config)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in random_state(config, 3, unit_gain=True).items()})
    return add_adapters(model, lora_spec(rank, None, 0.0, targets, None))


@pytest.mark.parametrize("path", ["fp32 eval", "bf16 eval", "fp32 train"])
def test_every_targeted_layer_changes_the_output_on_every_path(path):
    """One adapter at a time made non-zero: the features of its tower change, on the float32 inference path, the
    bf16 inference path (its half-precision QuickGELU MLP reads fc1/fc2 weights directly) and the autograd path;
    the last block's first-token attention (which slices qkv's weight) included."""
    from peft.tuners.lora import LoraLayer

    model = adapted_tiny()
    dtype = torch.bfloat16 if path.startswith("bf16") else torch.float32
    model.to(dtype).train(path.endswith("train"))
    layers = [(name, m) for name, m in model.named_modules() if isinstance(m, LoraLayer)]
    assert len(layers) == 2 * 2 * 4 + 1  # 2 towers x 2 blocks x 4 layers + the text pooler
    assert any(name.endswith(f"layers.{len(model.vision.layers) - 1}.attn.qkv") for name, _ in layers)
    for _, module in layers:
        torch.nn.init.zeros_(module.lora_B["default"].weight)
    grad = path.endswith("train")
    base = features(model, model.config, dtype, grad)
    for name, module in layers:
        with torch.no_grad():
            module.lora_B["default"].weight.normal_(std=0.5, generator=torch.Generator().manual_seed(1))
        changed = features(model, model.config, dtype, grad)
        tower = 0 if name.startswith("vision") else 1
        difference = float((changed[tower].float() - base[tower].float()).abs().max())
        assert difference > 1e-3, f"{name}: the adapter did not act on the {path} path ({difference})"
        assert torch.equal(changed[1 - tower], base[1 - tower])
        torch.nn.init.zeros_(module.lora_B["default"].weight)


def test_only_adapters_and_temperature_train(shapes, tmp_path):
    """After a run, every base weight is bit-identical to the model's, every adapter and the temperature moved."""
    settings = FinetuneSettings(shapes.model, shapes.train, tmp_path / "run", images=shapes.train_images,
                                batch_size=8, lr=1e-2, warmup_steps=0, max_steps=3, num_workers=0, progress=False,
                                gradient_checkpointing=True, eval_at_start=False, lora_rank=2,
                                lora_targets="vision.qkv,text.fc2")
    trainer = Trainer(settings)
    trainer.prepare()
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.run()
    after = dict(trainer.model.named_parameters())
    trainable = {n for n, p in after.items() if p.requires_grad}
    assert trainable == {n for n in after if ".lora_" in n} | {"temperature"}
    assert {n.split(".lora_")[0].split(".", 3)[-1] for n in trainable if ".lora_" in n} == {"attn.qkv", "mlp.fc2"}
    for name, param in after.items():
        moved = not torch.equal(param, before[name])
        assert moved == (name in trainable), name
    optimizer_params = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert optimizer_params == {id(after[n]) for n in trainable}


def test_run_writes_merged_models_and_adapter_only_checkpoints(trained):
    final = ErnieViL2.from_pretrained(trained / FINAL_DIR)  # a plain converted directory
    assert not any(".lora_" in k or "base_layer" in k for k in final.state_dict())
    checkpoints = list_checkpoints(trained)
    assert [p.name for p in checkpoints] == ["step-00000002", "step-00000004"]
    files = sorted(p.name for p in checkpoints[-1].iterdir())
    assert files == sorted([TRAINABLE_NAME, "trainer_state.pt"])
    size = sum(p.stat().st_size for p in checkpoints[-1].iterdir())
    assert size < (trained / FINAL_DIR / "model.safetensors").stat().st_size  # adapters, not the model


def test_a_resumed_lora_run_ends_with_the_uninterrupted_weights(shapes, trained, tmp_path):
    """Cut after step 2's checkpoint (later outputs removed, as a kill leaves them), then --resume: final/ equals
    the uninterrupted run's bit for bit (dropout in the text tower and on the adapters)."""
    cut = tmp_path / "cut"
    shutil.copytree(trained, cut)
    shutil.rmtree(cut / FINAL_DIR)
    shutil.rmtree(cut / CHECKPOINTS_DIR / "step-00000004")
    result = lora_run(shapes, cut, lora_dropout=0.1, resume=True)
    assert result.resumed_from == 2
    a = ErnieViL2.from_pretrained(trained / FINAL_DIR).state_dict()
    b = ErnieViL2.from_pretrained(cut / FINAL_DIR).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


# ---- bad input --------------------------------------------------------------------------------------------------
def test_targets_are_parsed_per_tower():
    assert parse_targets("qkv", None) == (("vision", "qkv"), ("text", "qkv"))
    assert parse_targets("vision.fc1, text.pooler", None) == (("vision", "fc1"), ("text", "pooler"))
    assert parse_targets("qkv,fc1", "vision") == (("text", "qkv"), ("text", "fc1"))


@pytest.mark.parametrize("options, message", [
    ({"lora_rank": 0}, "--lora_rank must be a positive integer"),
    ({"lora_rank": -2}, "--lora_rank must be a positive integer"),
    ({"lora_rank": 4, "lora_targets": "qkv,attention"}, "unknown module 'attention'"),
    ({"lora_rank": 4, "lora_targets": "vision.pooler"}, "unknown module 'vision.pooler'"),
    ({"lora_rank": 4, "lora_targets": "vision.qkv", "freeze": "vision"}, "no adapter in the trained tower"),
    ({"lora_rank": 4, "lora_alpha": 0.0}, "--lora_alpha must be positive"),
    ({"lora_rank": 4, "lora_dropout": 1.0}, "--lora_dropout must be in"),
    ({"lora_rank": None, "lora_dropout": 0.1}, "need --lora_rank"),
    ({"grad_cache_chunk": 0}, "--grad_cache_chunk must be a positive integer"),
    ({"grad_cache_chunk": -4}, "--grad_cache_chunk must be a positive integer"),
    ({"grad_cache_chunk": 4, "grad_accum": 2}, "--grad_cache_chunk with --grad_accum"),
])
def test_bad_lora_and_grad_cache_settings_are_refused_before_any_work(shapes, tmp_path, options, message):
    with pytest.raises(InputError, match=message):
        lora_run(shapes, tmp_path / "run", **options)
    assert not (tmp_path / "run").exists()


def test_a_rank_larger_than_the_layers_is_refused_before_the_model_loads(shapes, tmp_path, monkeypatch):
    hidden = tiny_config().vision.hidden_size
    import ernievil2torch.training.trainer as trainer_module

    def no_loading(*args, **kwargs):
        raise AssertionError("the model was loaded before the rank was checked")

    monkeypatch.setattr(trainer_module, "load_pretrained", no_loading)
    with pytest.raises(InputError, match=f"--lora_rank {hidden + 1} is larger"):
        lora_run(shapes, tmp_path / "run", lora_rank=hidden + 1)
    assert not (tmp_path / "run").exists()


# ---- proof that adapters learn -----------------------------------------------------------------------------------
LEARNING_IMAGES_PER_CAPTION = 48
BASE_STEPS = 150  # full fine-tuning of the random tiny model on colour captions ("一个红色的"): the related task
LEARNING_RANK = 8
LEARNING_LR = 3e-3
LEARNING_ALPHA = 32.0
LEARNING_STEPS = 1000
#: text->image R@1 (%) on the 20 unseen validation images after LEARNING_STEPS: the 90 % of issue 19.
LEARNING_MIN_R1 = 90.0
LEARNING_CPU_LIMIT_S = 100.0


def test_adapters_learn_new_shape_captions_on_a_colour_base(tmp_path, single_thread):
    """A tiny model fine-tuned (fully) on colour-only captions knows colours, not shapes: on the shape x colour
    captions it ranks about 1 in 4 right (the 4 shapes of a colour tie). Rank-8 adapters, with every base weight
    fixed, then learn the 20 shape x colour captions to >= LEARNING_MIN_R1 text->image R@1 on unseen images.

    Measured when this was set (these settings, 1,000 steps; about 65 s of CPU): data seed 0 (this test) reaches
    90 % at step 400 and ends at 100 %; data seed 2 ends at 100 %; data seed 1 reaches 90 % at step 900 but ends at
    85 % (3 of 20 wrong). With 500 steps the three seeds ended at 85, 75 and 100 %; lr 1e-2 diverged, lr 5e-3 and
    alpha 64 at 2e-3 ended at 80-85 %. Rank-8 adapters on the 2-block tiny model learn the shapes more slowly and
    less surely than full fine-tuning (the from-scratch test in test_training.py reaches 90 % for seeds 0-7)."""
    setup = shapes_setup(tmp_path / "data", images_per_caption=LEARNING_IMAGES_PER_CAPTION, text_dropout=0.0)
    lines = [json.loads(line) for line in setup.train.read_text(encoding="utf-8").splitlines()]
    colours = setup.train.with_name("colours.jsonl")
    colours.write_text("".join(json.dumps({**item, "caption": item["caption"][:5]}, ensure_ascii=False) + "\n"
                               for item in lines), encoding="utf-8")
    assert lines[0]["caption"].startswith("一个") and len({item["caption"][:5] for item in lines}) == 5
    common = dict(images=setup.train_images, val=setup.val, val_images=setup.val_images, batch_size=32,
                  warmup_steps=10, log_every=50, num_workers=0, progress=False, gradient_checkpointing=False)
    cpu = time.process_time()
    base = finetune(setup.model, colours, tmp_path / "base", max_steps=BASE_STEPS, lr=2e-3, eval_every=BASE_STEPS,
                    save_every=BASE_STEPS, **common)
    result = finetune(base.final, setup.train, tmp_path / "lora", max_steps=LEARNING_STEPS, lr=LEARNING_LR,
                      lora_rank=LEARNING_RANK, lora_alpha=LEARNING_ALPHA, eval_every=100,
                      save_every=LEARNING_STEPS, **common)
    cpu = time.process_time() - cpu
    validations = [(r["step"], r["validation"]["t2i"]["R@1"]) for r in map(
        json.loads, (tmp_path / "lora" / METRICS_LOG_NAME).read_text().splitlines()) if "validation" in r]
    print(f"\ncolour base: t2i R@1 {base.last_validation['t2i']['R@1']:.0f} %; adapters, by step: "
          + ", ".join(f"{s}: {v:.0f}" for s, v in validations) + f"; CPU {cpu:.1f} s")
    assert validations[0][1] <= 35.0  # the colour base alone: about 25 %
    assert result.last_validation["t2i"]["R@1"] >= LEARNING_MIN_R1
    # best/ (the run validated every 100 steps) is published as final/ is: merged, the adapter beside
    assert result.best == tmp_path / "lora" / BEST_DIR and result.best_step is not None
    assert json.loads((result.best / "best.json").read_text())["step"] == result.best_step
    check_merged_with_adapter_beside(result.best, base.final, LEARNING_RANK)
    assert cpu <= LEARNING_CPU_LIMIT_S


def test_adapters_start_from_the_run_seed(shapes, tmp_path):
    """lora_A is drawn from the run's seed, not from whatever the global random state was: two preparations of the
    same settings start identical (processes of a torchrun job included), another seed starts elsewhere."""
    def initial(seed: int, out: str):
        torch.manual_seed(seed * 1000 + len(out))  # a different global state each time
        settings = FinetuneSettings(shapes.model, shapes.train, tmp_path / out, images=shapes.train_images,
                                    batch_size=8, max_steps=1, num_workers=0, progress=False, lora_rank=2,
                                    eval_at_start=False, seed=seed)
        trainer = Trainer(settings)
        trainer.prepare()
        return {n: p.detach().clone() for n, p in trainer.model.named_parameters() if ".lora_A." in n}

    a, b, c = initial(1, "a"), initial(1, "bb"), initial(2, "c")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_the_lora_flags_accept_their_whole_documented_range():
    """Any positive alpha (a fraction too; default 2 x rank), dropout in [0, 1); the edges just outside refused."""
    assert lora_spec(4, None, 0.0, "qkv", None).alpha == 8.0
    assert lora_spec(4, 0.5, 0.0, "qkv", None).alpha == 0.5
    assert lora_spec(1, 1e-3, 0.999, "qkv", None).dropout == 0.999
    for alpha, dropout, message in ((-1.0, 0.0, "--lora_alpha must be positive"), (True, 0.0, "--lora_alpha"),
                                    (4.0, 1.0, r"--lora_dropout must be in \[0, 1\)"),
                                    (4.0, -0.1, "--lora_dropout")):
        with pytest.raises(InputError, match=message):
            lora_spec(4, alpha, dropout, "qkv", None)


def test_a_lora_checkpoint_checks_the_disk_first_and_writes_nothing_when_it_lacks_room(tmp_path, monkeypatch):
    import shutil as shutil_module

    from ernievil2torch.errors import DiskSpaceError
    from ernievil2torch.training import disk
    from ernievil2torch.training.checkpoints import write_trainable

    model = adapted_tiny()
    usage = shutil_module.disk_usage(tmp_path)
    monkeypatch.setattr(disk.shutil, "disk_usage", lambda path: usage._replace(free=1000))
    with pytest.raises(DiskSpaceError, match="not enough disk space for checkpoint step-00000002/"):
        write_trainable(tmp_path / "step-00000002", model, {"step": 2})
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    files = sorted(p.name for p in write_trainable(tmp_path / "step-00000002", model, {"step": 2}).iterdir())
    assert files == sorted([TRAINABLE_NAME, "trainer_state.pt"])


def test_a_rank_equal_to_the_smallest_layer_side_is_the_largest_allowed():
    from ernievil2torch.training.lora import check_rank

    config = tiny_config()
    for tower in ("vision", "text"):
        cfg = getattr(config, tower)
        smallest = min(cfg.hidden_size, cfg.intermediate_size)
        check_rank(lora_spec(smallest, None, 0.0, f"{tower}.qkv", None), config)
        with pytest.raises(InputError, match=f"at most {smallest}"):
            check_rank(lora_spec(smallest + 1, None, 0.0, f"{tower}.qkv", None), config)


def test_a_checkpoint_with_other_adapters_is_refused_and_its_own_loads(tmp_path):
    """--resume reads the adapters a checkpoint holds: they must be exactly the run's (a checkpoint of a run with
    fewer target layers would leave the others at their fresh draw without a word); the run's own load back."""
    from safetensors.torch import save_file

    saved = adapted_tiny(targets="qkv,out_proj,fc1,fc2,text.pooler")
    state = trainable_state(saved)
    save_file(state, str(tmp_path / "all.safetensors"))
    save_file({k: v for k, v in state.items() if ".fc2." not in k}, str(tmp_path / "fewer.safetensors"))
    fresh = adapted_tiny(targets="qkv,out_proj,fc1,fc2,text.pooler")
    with pytest.raises(CheckpointError, match="do not match the run's adapters"):
        load_trainable_state(fresh, tmp_path / "fewer.safetensors")
    load_trainable_state(fresh, tmp_path / "all.safetensors")
    assert all(torch.equal(tensor, trainable_state(fresh)[name]) for name, tensor in state.items())
