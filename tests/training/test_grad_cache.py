"""Gradient cache (``--grad_cache_chunk``): the gradient of the whole batch, however it is chunked.

Bounds: per-tensor relative norm ``|g_cache - g_plain| / |g_plain|`` <= 1e-6 in float64 (the proof that it is the
same computation) and <= 1e-5 in float32 (summation order), for batch 16 in chunks of 4.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
import subprocess
import sys
from typing import Dict, List, Optional

import numpy as np
import pytest
import torch

from ernievil2torch.cli import COMMANDS, run_command
from ernievil2torch.config import ErnieViL2Config, tiny_config
from ernievil2torch.constants import CHECKPOINTS_DIR, FINAL_DIR
from ernievil2torch.modeling import ErnieViL2
from ernievil2torch.training import ContrastiveObjective, finetune
from ernievil2torch.training.grad_cache import chunk_slices, grad_cache_backward
from ernievil2torch.training.model_setup import train_mode
from ernievil2torch.verify.parity import synthetic_inputs
from ernievil2torch.verify.synthetic import random_state
from helpers import REPO_ROOT
from shapes import shapes_setup

WORKER = REPO_ROOT / "tests" / "workers" / "grad_cache_gradients.py"
CALLS_WORKER = REPO_ROOT / "tests" / "workers" / "finetune_cache_calls.py"
BOUNDS = {torch.float64: 1e-6, torch.float32: 1e-5}
BATCH, CHUNK = 16, 4
LENGTHS = (8, 30, 5, 17, 12, 3, 25, 9) * 2


def config_with(text_dropout: float = 0.0, vision_dropout: float = 0.0) -> ErnieViL2Config:
    config = tiny_config()
    text = {"hidden_dropout": text_dropout, "attention_dropout": text_dropout}
    vision = {"hidden_dropout": vision_dropout, "attention_dropout": vision_dropout}
    return dataclasses.replace(config, text=dataclasses.replace(config.text, **text),
                               vision=dataclasses.replace(config.vision, **vision))


def make_model(config: ErnieViL2Config, dtype: torch.dtype, checkpointing: bool = False,
               freeze: Optional[str] = None) -> ErnieViL2:
    model = ErnieViL2(config)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in random_state(config, 8, unit_gain=True).items()})
    model.to(dtype).set_gradient_checkpointing(checkpointing)
    if freeze:
        getattr(model, freeze).requires_grad_(False)
    train_mode(model, freeze)
    return model


def inputs(config: ErnieViL2Config, dtype: torch.dtype):
    data = synthetic_inputs(config, seed=8, images=BATCH, lengths=LENGTHS)
    ids = torch.from_numpy(data.input_ids)
    return torch.from_numpy(data.pixel_values).to(dtype), ids, (ids != 0).long()


def gradients(model: ErnieViL2) -> Dict[str, Optional[torch.Tensor]]:
    return {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()}


def step(config, dtype, cached: bool, checkpointing=False, freeze=None, autocast=contextlib.nullcontext,
         chunk: int = CHUNK):
    torch.manual_seed(0)
    model = make_model(config, dtype, checkpointing, freeze)
    objective = ContrastiveObjective(model, freeze)
    pixels, ids, mask = inputs(config, dtype)
    if cached:
        loss = grad_cache_backward(objective, pixels, ids, mask, chunk, autocast).loss
    else:
        with autocast():
            loss = objective(pixels, ids, mask)
        loss.backward()
    return float(loss.detach()), gradients(model)


def worst_relative(cache: Dict[str, Optional[torch.Tensor]], plain: Dict[str, Optional[torch.Tensor]]) -> float:
    assert {k for k, v in cache.items() if v is None} == {k for k, v in plain.items() if v is None}
    return max(float((cache[k].double() - plain[k].double()).norm() / plain[k].double().norm())
               for k in plain if plain[k] is not None)


def test_chunks_cover_the_batch_and_the_last_may_be_smaller():
    assert chunk_slices(10, 4) == [slice(0, 4), slice(4, 8), slice(8, 10)]
    assert chunk_slices(4, 8) == [slice(0, 4)]
    assert chunk_slices(3, 1) == [slice(0, 1), slice(1, 2), slice(2, 3)]  # one pair at a time is the smallest chunk
    for chunk in (0, -1):  # refused by its own check, with a message, not by range()'s
        with pytest.raises(ValueError, match="chunk size must be >= 1"):
            chunk_slices(4, chunk)


@pytest.mark.parametrize("chunk", [CHUNK, 5], ids=["chunk4", "chunk5-last1"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_gradient_cache_equals_the_plain_full_batch(dtype, chunk):
    """Batch 16, one process, dropout off: the loss and every gradient as the plain step's, in chunks of 4 and in
    chunks of 5 (5 + 5 + 5 + 1: the last chunk smaller, down to one pair)."""
    assert chunk == CHUNK or BATCH % chunk == 1
    config = config_with()
    plain_loss, plain = step(config, dtype, cached=False)
    cache_loss, cache = step(config, dtype, cached=True, chunk=chunk)
    worst = worst_relative(cache, plain)
    print(f"\n{dtype}, chunks of {chunk}: loss {plain_loss:.9f} vs {cache_loss:.9f}; worst per-tensor relative "
          f"gradient norm difference {worst:.2e} over {len(plain)} tensors")
    assert abs(cache_loss - plain_loss) <= BOUNDS[dtype] * abs(plain_loss)
    assert worst <= BOUNDS[dtype]


def test_two_processes_with_the_cache_equal_one_process_with_the_whole_batch(tmp_path):
    """torchrun, gloo: 2 processes x 8 pairs in chunks of 4 (features gathered, gradients averaged) against one
    process's plain step on all 16."""
    env = {**__import__("os").environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    run = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(WORKER),
           str(tmp_path)]
    proc = subprocess.run(run, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = subprocess.run([sys.executable, str(WORKER), str(tmp_path)], capture_output=True, text=True,
                          timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [np.load(tmp_path / f"rank{r}-of-2.npz") for r in range(2)]
    single = np.load(tmp_path / "rank0-of-1.npz")
    for dtype, bound in (("float64", 1e-6), ("float32", 1e-5)):
        names = [k for k in single.files if k.startswith(f"{dtype}/grad/")]
        loss = float(single[f"{dtype}/loss"])
        loss_rel = max(abs(float(r[f"{dtype}/loss"]) - loss) / abs(loss) for r in ranks)
        worst = max(float(np.linalg.norm(r[k] - single[k]) / np.linalg.norm(single[k])) for r in ranks for k in names)
        print(f"\n{dtype}: 2 processes x 8 in chunks of 4 vs 1 x 16 plain: loss rel diff {loss_rel:.2e}, worst "
              f"per-tensor relative gradient difference {worst:.2e} over {len(names)} tensors x 2 ranks")
        assert loss_rel <= bound and worst <= bound
        assert all(np.array_equal(ranks[0][k], r[k]) for r in ranks for k in names)  # averaged: ranks identical


@pytest.mark.parametrize("checkpointing", [False, True])
def test_second_pass_replays_the_first_bit_for_bit_with_dropout(checkpointing):
    """Dropout on in both towers (0.1), float32: the re-encoded features equal the cached ones exactly, so every
    dropout mask was the same (also with gradient checkpointing, which replays them once more in backward)."""
    config = config_with(text_dropout=0.1, vision_dropout=0.1)
    model = make_model(config, torch.float32, checkpointing)
    pixels, ids, mask = inputs(config, torch.float32)
    torch.manual_seed(3)
    result = grad_cache_backward(ContrastiveObjective(model), pixels, ids, mask, CHUNK, contextlib.nullcontext,
                                 keep_replay=True)
    assert torch.equal(result.replayed_image, result.cached_image)
    assert torch.equal(result.replayed_text, result.cached_text)
    model.eval()  # dropout really acted: the eval features differ
    with torch.no_grad():
        assert not torch.equal(model.encode_text(ids[:CHUNK], mask[:CHUNK]), result.cached_text[:CHUNK])


def test_bf16_weights_replay_exactly_with_dropout():
    """bf16 weights (``model.to(torch.bfloat16)``, no autocast), dropout 0.1 in both towers: the re-encoded
    features equal the cached ones bit for bit. Under no-grad in half precision the vision MLP would take its fused
    QuickGELU fast path (other roundings) while the replay, with a graph, takes the autograd one; the first pass
    runs inside ``autograd_paths()`` so that both passes compute the same thing."""
    config = config_with(text_dropout=0.1, vision_dropout=0.1)
    model = make_model(config, torch.bfloat16)
    pixels, ids, mask = inputs(config, torch.bfloat16)
    torch.manual_seed(3)
    result = grad_cache_backward(ContrastiveObjective(model), pixels, ids, mask, CHUNK, contextlib.nullcontext,
                                 keep_replay=True)
    assert result.cached_image.dtype == result.cached_text.dtype == torch.bfloat16
    assert torch.equal(result.replayed_image, result.cached_image)
    assert torch.equal(result.replayed_text, result.cached_text)
    assert all(p.grad is not None and p.grad.dtype == torch.bfloat16 for p in model.parameters())
    model.eval()  # dropout really acted: the eval features differ
    with torch.no_grad():
        assert not torch.equal(model.encode_image(pixels[:CHUNK]), result.cached_image[:CHUNK])


def test_gradient_checkpointing_gives_the_same_gradients():
    config = config_with()
    _, plain = step(config, torch.float64, cached=False)
    _, cache = step(config, torch.float64, cached=True, checkpointing=True)
    assert worst_relative(cache, plain) <= BOUNDS[torch.float64]


@pytest.mark.parametrize("freeze", ["vision", "text"])
def test_a_frozen_tower_gets_no_gradient_and_the_other_the_plain_one(freeze):
    config = config_with()
    _, plain = step(config, torch.float64, cached=False, freeze=freeze)
    _, cache = step(config, torch.float64, cached=True, freeze=freeze)
    assert all(g is None for n, g in cache.items() if n.startswith(freeze + "."))
    assert worst_relative(cache, plain) <= BOUNDS[torch.float64]


def test_bf16_autocast_replays_exactly_and_matches_the_plain_step():
    """Under bf16 autocast the replay is still exact, and the gradients agree with the plain bf16 step to bf16
    precision (the plain step rounds its own activations differently: it batches 16 rows, the cache 4)."""
    config = config_with(text_dropout=0.1)
    autocast = lambda: torch.autocast("cpu", dtype=torch.bfloat16)  # noqa: E731
    model = make_model(config, torch.float32)
    pixels, ids, mask = inputs(config, torch.float32)
    result = grad_cache_backward(ContrastiveObjective(model), pixels, ids, mask, CHUNK, autocast, keep_replay=True)
    assert result.cached_text.dtype == torch.bfloat16
    assert torch.equal(result.replayed_image, result.cached_image)
    assert torch.equal(result.replayed_text, result.cached_text)
    config = config_with()
    _, plain = step(config, torch.float32, cached=False, autocast=autocast)
    _, cache = step(config, torch.float32, cached=True, autocast=autocast)
    worst = worst_relative(cache, plain)
    print(f"\nbf16 autocast: worst per-tensor relative gradient difference {worst:.2e}")
    assert worst <= 0.05


# ---- through finetune ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return shapes_setup(tmp_path_factory.mktemp("shapes"), images_per_caption=1, text_dropout=0.0)


def weight_change(setup, out) -> Dict[str, torch.Tensor]:
    before = ErnieViL2.from_pretrained(setup.model).state_dict()
    after = ErnieViL2.from_pretrained(out / FINAL_DIR).state_dict()
    return {k: (after[k].double() - before[k].double()) for k in before}


@pytest.fixture
def cache_calls(monkeypatch) -> List[Dict[str, int]]:
    """Every call the trainer makes to ``grad_cache_backward`` (the rows of its batch and its chunk), recorded:
    with the settings of these tests a trainer that ignored ``--grad_cache_chunk`` would step plainly and end
    with the same weights, so only the calls show that the cache ran."""
    import ernievil2torch.training.trainer as trainer_module

    calls: List[Dict[str, int]] = []
    real = trainer_module.grad_cache_backward

    def recording(objective, pixel_values, input_ids, attention_mask, chunk, autocast, **kwargs):
        calls.append({"rows": int(pixel_values.shape[0]), "chunk": int(chunk)})
        return real(objective, pixel_values, input_ids, attention_mask, chunk, autocast, **kwargs)

    monkeypatch.setattr(trainer_module, "grad_cache_backward", recording)
    return calls


def test_one_finetune_step_with_the_cache_changes_the_weights_as_without(shapes, tmp_path, capsys, cache_calls):
    """``ernievil2 finetune``: one step of batch 16 (dropout off) with and without --grad_cache_chunk 4.

    AdamW's first step is ``lr * g / (|g| + eps)``: with the default eps that is ``lr * sign(g)``, which turns the
    round-off of a gradient that is zero in exact arithmetic (the key biases': softmax ignores a constant added to
    every key) into a full-size step of either sign. ``--adam_eps 1`` (and no weight decay) makes the step
    ``lr * g / (|g| + 1)``, a smooth function of the gradient, so the weight change compares the gradients; the
    large lr (100) keeps the change far above the float32 spacing of the saved weights (with lr 1e-3 the weights'
    own rounding alone differs by 1e-4 of the change)."""
    common = [str(shapes.model), str(shapes.train), "--images", str(shapes.train_images), "--batch_size", "16",
              "--max_steps", "1", "--warmup_steps", "0", "--lr", "100", "--num_workers", "0", "--progress", "false",
              "--gradient_checkpointing", "false", "--precision", "fp32", "--adam_eps", "1", "--weight_decay", "0"]
    run_command(COMMANDS, name="ernievil2", argv=["finetune", *common[:2], str(tmp_path / "plain"), *common[2:]])
    assert cache_calls == []  # the plain run steps without the cache
    run_command(COMMANDS, name="ernievil2", argv=["finetune", *common[:2], str(tmp_path / "cache"), *common[2:],
                                                  "--grad_cache_chunk", "4"])
    assert cache_calls == [{"rows": 16, "chunk": 4}]  # the one step: the whole batch of 16, in chunks of 4
    capsys.readouterr()
    plain, cache = weight_change(shapes, tmp_path / "plain"), weight_change(shapes, tmp_path / "cache")
    changed = [k for k in plain if plain[k].norm() > 0]
    worst = max(float((cache[k] - plain[k]).norm() / plain[k].norm()) for k in changed)
    print(f"\none step: worst per-tensor relative difference of the weight change {worst:.2e} "
          f"({len(changed)} tensors changed)")
    assert len(changed) == len(plain) and worst <= 1e-5


def test_a_cached_run_resumed_ends_as_the_uninterrupted_run(shapes, tmp_path, cache_calls):
    """A run with the cache and dropout (text 0.1 from the model's config here) resumed from its step-2
    checkpoint ends with the uninterrupted run's weights, bit for bit."""
    setup = shapes_setup(tmp_path / "data", images_per_caption=1, text_dropout=0.1)
    settings = dict(images=setup.train_images, batch_size=8, grad_cache_chunk=3, lr=1e-3, warmup_steps=1,
                    max_steps=4, save_every=2, keep_last=2, num_workers=0, progress=False, eval_at_start=False,
                    gradient_checkpointing=True)
    finetune(setup.model, setup.train, tmp_path / "straight", **settings)
    assert cache_calls == [{"rows": 8, "chunk": 3}] * 4  # every step through the cache (chunks of 3, 3 and 2)
    shutil.copytree(tmp_path / "straight", tmp_path / "cut")
    shutil.rmtree(tmp_path / "cut" / FINAL_DIR)
    shutil.rmtree(tmp_path / "cut" / CHECKPOINTS_DIR / "step-00000004")  # as if killed after step 2's checkpoint
    result = finetune(setup.model, setup.train, tmp_path / "cut", resume=True, **settings)
    assert result.resumed_from == 2 and result.steps == 4
    assert cache_calls == [{"rows": 8, "chunk": 3}] * 6  # the resumed run's steps 3 and 4 through the cache too
    a = ErnieViL2.from_pretrained(tmp_path / "straight" / FINAL_DIR).state_dict()
    b = ErnieViL2.from_pretrained(tmp_path / "cut" / FINAL_DIR).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_finetune_under_torchrun_with_the_cache_steps_as_one_process_with_the_global_batch(shapes, tmp_path,
                                                                                           capsys):
    """`python -m ernievil2torch.finetune` under torchrun (2 gloo processes x 8 pairs in chunks of 4: the trainer's
    own path, no DDP, gradients averaged by the cache) against one process's plain step on the same 16 pairs:
    one step's weight change within 1e-5 (the settings of the one-step test above). The command runs through
    tests/workers/finetune_cache_calls.py, which records each process's calls to the gradient cache."""
    import os

    steps = ["--batch_size", "8", "--max_steps", "1", "--warmup_steps", "0", "--lr", "100", "--num_workers", "0",
             "--progress", "false", "--gradient_checkpointing", "false", "--precision", "fp32", "--adam_eps", "1",
             "--weight_decay", "0", "--images", str(shapes.train_images)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    calls = tmp_path / "calls"
    calls.mkdir()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(CALLS_WORKER),
           str(calls), str(shapes.model), str(shapes.train), str(tmp_path / "two"), *steps, "--grad_cache_chunk", "4"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    for rank in range(2):  # each process stepped once through the cache: its 8 pairs in chunks of 4, 2 processes
        recorded = json.loads((calls / f"rank{rank}.json").read_text(encoding="utf-8"))
        assert recorded == [{"rows": 8, "chunk": 4, "world_size": 2}], (rank, recorded)
    one = [a if a != "8" else "16" for a in steps]  # the global batch in one process, plain
    run_command(COMMANDS, name="ernievil2", argv=["finetune", str(shapes.model), str(shapes.train),
                                                  str(tmp_path / "one"), *one])
    capsys.readouterr()
    two, single = weight_change(shapes, tmp_path / "two"), weight_change(shapes, tmp_path / "one")
    worst = max(float((two[k] - single[k]).norm() / single[k].norm()) for k in single)
    print(f"\ntorchrun 2 x 8 (chunks of 4) vs 1 x 16: worst relative difference of the weight change {worst:.2e}")
    assert worst <= 1e-5


def test_the_cache_with_lora_adapters_gives_the_plain_adapter_gradients():
    """LoRA adapters (non-zero, dropout off) trained through the cache: the adapter and temperature gradients of the
    plain step, float64; no base weight gets a gradient."""
    from ernievil2torch.training.lora import add_adapters, lora_spec

    config = config_with()
    results = []
    for cached in (False, True):
        model = make_model(config, torch.float64)
        torch.manual_seed(5)
        add_adapters(model, lora_spec(4, None, 0.0, "qkv,fc2,text.pooler", None)).to(torch.float64)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if ".lora_B." in name:
                    p.normal_(std=0.1, generator=torch.Generator().manual_seed(len(name)))
        model.train()
        pixels, ids, mask = inputs(config, torch.float64)
        objective = ContrastiveObjective(model)
        if cached:
            grad_cache_backward(objective, pixels, ids, mask, CHUNK, contextlib.nullcontext)
        else:
            objective(pixels, ids, mask).backward()
        assert all(p.grad is None for p in model.parameters() if not p.requires_grad)
        results.append({n: p.grad for n, p in model.named_parameters() if p.requires_grad})
    plain, cache = results
    assert len(plain) > 1 and all(g is not None for g in plain.values())
    assert worst_relative(cache, plain) <= BOUNDS[torch.float64]


def test_the_random_state_on_a_gpu_restores_its_cuda_generator_too(monkeypatch):
    """The replay's dropout masks come from the CUDA generator on a GPU: RandomState must put that one back as well
    as the CPU's (faked here, as CI has no GPU: the calls and their arguments are the contract)."""
    from ernievil2torch.training.grad_cache import RandomState

    generator = {"cuda:1": torch.tensor([1, 2, 3], dtype=torch.uint8)}
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device: generator[str(device)].clone())
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device: generator.__setitem__(str(device), state))
    state = RandomState(torch.device("cuda", 1))
    generator["cuda:1"] = torch.tensor([9, 9, 9], dtype=torch.uint8)  # dropout drew from it
    cpu_before = torch.get_rng_state()
    torch.rand(3)
    state.restore()
    assert generator["cuda:1"].tolist() == [1, 2, 3]
    assert torch.equal(torch.get_rng_state(), cpu_before)
    assert RandomState(torch.device("cpu")).cuda is None  # a CPU run never touches CUDA
