"""Every command-line mistake of every ``ernievil2`` subcommand ends in one ``error:`` line and exit status 2 before
any work; the spellings that are meant to work parse to what they mean.

"Before any work" is proven in-process: the loaders every command starts with (the model loader, the converter's
reader, the converted-folder reader, the embed-output reader) are replaced by a tripwire that raises, and the
test folder must hold exactly the files it held before. ``MISTAKES`` must hold a case for every subcommand.
"""
from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Dict, List, Tuple

import pytest
from PIL import Image

from ernievil2torch import cli
from ernievil2torch.cli import COMMANDS, checks, parse_arguments, run_command

# Modules the commands run; imported first, so that names they bound at import are patched too.
COMMAND_MODULES = ("ernievil2torch.apps.embed", "ernievil2torch.apps.retrieval", "ernievil2torch.apps.dedup",
                   "ernievil2torch.apps.serve", "ernievil2torch.apps.similarity", "ernievil2torch.apps.zero_shot",
                   "ernievil2torch.training", "ernievil2torch.verify.logit_check", "ernievil2torch.conversion",
                   "ernievil2torch.export.hf", "ernievil2torch.export.onnx", "ernievil2torch.export.paddle")
# (module, function): where each command's work starts. The first three must exist.
TRIPWIRES = (("ernievil2torch.pretrained", "load_pretrained"), ("ernievil2torch.conversion.pdparams", "load_pdparams"),
             ("ernievil2torch.storage.model_dir", "read_model_dir"),
             ("ernievil2torch.storage.embeddings", "write_embed_output"))


class WorkStarted(BaseException):
    """Raised by a tripwire: the command got past its argument checks and began to work."""


@pytest.fixture
def tripwires(monkeypatch) -> List[str]:
    for name in COMMAND_MODULES:
        importlib.import_module(name)
    originals = {}
    for index, (module, function) in enumerate(TRIPWIRES):
        found = getattr(importlib.import_module(module), function, None)
        assert found is not None or index >= 3, f"{module}.{function} is gone: update TRIPWIRES"
        if found is not None:
            originals[id(found)] = f"{module}.{function}"

    def tripwire(label: str):
        def raising(*args, **kwargs):
            raise WorkStarted(label)
        return raising

    patched = []
    for module_name, module in list(sys.modules.items()):
        if not module_name.startswith("ernievil2torch") or module is None:
            continue
        for attribute, value in list(vars(module).items()):
            if id(value) in originals:
                monkeypatch.setattr(module, attribute, tripwire(originals[id(value)]))
                patched.append(f"{module_name}.{attribute}")
    return patched


@pytest.fixture
def place(tmp_path, monkeypatch) -> Dict[str, str]:
    """A working directory with one of each input a command reads; outputs would go to ``out*`` names."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "images").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "images" / "a.png")
    (tmp_path / "gallery").mkdir()
    (tmp_path / "gallery" / "ids.txt").write_text("a.png\n")
    (tmp_path / "model").mkdir()
    for name in ("data.tsv", "vocab.txt", "src.pdparams", "queries.npy"):
        (tmp_path / name).write_text("x\n")
    return {"img": str(tmp_path / "images" / "a.png")}


def listing(root: Path) -> List[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def run(argv: List[str], capsys) -> Tuple[int, str, str]:
    capsys.readouterr()
    try:
        run_command(COMMANDS, name="ernievil2", argv=argv)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


# (argv, a fragment of the error line). "{img}" is an existing image; every other named input exists (see place).
MISTAKES: List[Tuple[str, str]] = [
    # convert
    ("convert --src src.pdparams --dst out --dtype float64", "--dtype: dtype must be one of"),
    ("convert --src src.pdparams --dst out --dtype bf17", "bf16, bfloat16"),
    ("convert --src missing.pdparams --dst out", "--src: missing.pdparams: no such file"),
    ("convert --src src.pdparams --dst out --vocab missing.txt", "--vocab: missing.txt: no such file"),
    ("convert --source src.pdparams --dst out", "unknown flag --source (did you mean --src?)"),
    ("convert --src src.pdparams --dst out --overwrite maybe", "--overwrite: expected true/false, yes/no or 1/0"),
    ("convert --src src.pdparams --dst out --overwrite=nope", "--overwrite: expected true/false"),
    ("convert --src", "--src needs a value"),
    ("convert src.pdparams out vocab.txt false float32 surplus", "unexpected argument 'surplus'"),
    ("convert -s src.pdparams", "unknown option -s"),
    ("convert --src src.pdparams --dst out --model huge", "--model: must be a registered model name (base, "),
    # check
    ("check --paddle missing.pdparams --torch model", "--paddle: missing.pdparams: no such file"),
    ("check --paddle src.pdparams --torch missing_dir", "--torch: missing_dir is not a folder"),
    ("check --min_cosine 1.5", "--min_cosine: must be in [-1, 1], not 1.5"),
    ("check --feature_atol -1e-5", "--feature_atol: must be >= 0"),
    ("check --logit_atol abc", "--logit_atol: expected a number, not 'abc'"),
    ("check --seed -1", "--seed: must be >= 0"),
    ("check --seed 1.5", "--seed: expected an integer"),
    ("check --tiny nope", "--tiny: expected true/false"),
    ("check --paddle", "--paddle needs a value"),
    ("check --workdir data.tsv", "--workdir: data.tsv is not a folder"),
    ("check --paddle src.pdparams --torch model --tiny", "--tiny applies only to the synthetic check (without "
                                                         "--paddle/--torch)"),
    ("check --paddle src.pdparams --torch model --workdir work", "--workdir applies only to the synthetic check"),
    # similarity
    ("similarity --model model --dtype float64", "unknown flag --dtype"),
    ("similarity --model model --max_length 2", "--max_length: must be in [3, 2048], not 2"),
    ("similarity --model model --max_length 4096", "--max_length: must be in [3, 2048]"),
    ("similarity --model model --images missing.jpg", "--images: missing.jpg: no such file"),
    ("similarity --model model --images {img},missing.jpg", "missing.jpg: no such file"),
    ("similarity --model model --texts ,", "--texts: expected a comma-separated list"),
    ("similarity --model model --plot", "--plot needs a value"),
    ("""similarity --model model --texts '["a","b"]'""", "--texts: Python literals are no longer read"),
    ("similarity --model model --images '({img},)'", "write a comma-separated list such as a.jpg,b.jpg"),
    ("similarity --model model -- --trace", "--trace after -- was a flag of fire"),
    ("similarity --model model -- --separator=X", "--separator=X after -- was a flag of fire"),
    ("similarity --model model --plot missing_dir/p.png", "--plot: missing_dir/p.png: its folder missing_dir does "
                                                          "not exist"),
    ("similarity --model model --plot images", "--plot: images is a directory, not a file"),
    ("similarity --model model --plot data.tsv/p.png", "--plot: data.tsv/p.png: data.tsv is not a folder"),
    # classify
    ("classify --model model --images {img}", "missing LABELS"),
    ("classify --model model --images missing.jpg --labels 猫,狗", "missing.jpg: no such file"),
    ("classify --model model --images {img} --labels 猫 --vocab missing.txt", "--vocab: missing.txt: no such file"),
    ("classify --model model --images {img} --labels 猫 --template x", "unknown flag --template (did you mean "
                                                                       "--templates?)"),
    ("classify --model model --images {img} --labels 猫,狗 --templates {{}}{{}}", "template '{}{}' must hold exactly "
                                                                              "one '{}'"),
    ("classify --model model --images {img} --labels 猫 --templates {{x}}的{{}}", "no other brace"),
    ("classify --model model --images {img} --labels 猫 --templates 一张照片", "has no '{}' for the label"),
    # embed
    ("embed images model out --batchsize 8", "unknown flag --batchsize (did you mean --batch_size?)"),
    ("embed images model out --batch_size 0", "--batch_size: must be > 0, not 0"),
    ("embed images model out --batch_size -4", "--batch_size: must be > 0, not -4"),
    ("embed images model out --batch_size eight", "--batch_size: expected an integer"),
    ("embed images model out --num_workers -1", "--num_workers: must be >= 0"),
    ("embed images model out --shard_size 0", "--shard_size: must be > 0"),
    ("embed images model out --kind video", "--kind: must be one of image, text, not 'video'"),
    ("embed images model out --dtype fp64", "--dtype: dtype must be one of"),
    ("embed images model out --max_length 1", "--max_length: must be in [3, 2048]"),
    ("embed images model out --normalize maybe", "--normalize: expected true/false"),
    ("embed images model out --progress off", "--progress: expected true/false"),
    ("embed missing_dir model out", "--inputs: missing_dir: no such file or folder"),
    ("embed 'nothing/*.jpg' model out", "no file matches it as a pattern"),
    ("embed images model out --kind text --vocab missing.txt", "--vocab: missing.txt: no such file"),
    ("embed images model", "missing OUT"),
    ("embed images model out --device gpu", "--device: must be cpu, cuda, cuda:N or mps, not 'gpu'"),
    ("embed images model out --device cpu:0", "--device: must be cpu, cuda, cuda:N or mps"),
    # search
    ("search queries.npy gallery out.tsv --k 0", "--k: must be > 0, not 0"),
    ("search queries.npy gallery out.tsv --k -3", "--k: must be > 0"),
    ("search queries.npy gallery out.tsv --chunk_size 0", "--chunk_size: must be > 0"),
    ("search missing.npy gallery out.tsv", "--queries: missing.npy: no such file or folder"),
    ("search queries.npy missing_gallery out.tsv", "--gallery: missing_gallery: no such file or folder"),
    ("search queries.npy gallery out.tsv --normalize flase", "--normalize: expected true/false"),
    ("search queries.npy gallery out.tsv --topk 5", "unknown flag --topk"),
    ("search queries.npy gallery out.tsv 10 4096 true false surplus", "unexpected argument 'surplus'"),
    # eval
    ("eval model data.tsv --protocol pair", "--protocol: must be one of grouped, pairs, not 'pair'"),
    ("eval model missing.tsv", "--data: missing.tsv: no such file"),
    ("eval model data.tsv --images missing_dir", "--images: missing_dir is not a folder"),
    ("eval model data.tsv --batch_size 0", "--batch_size: must be > 0"),
    ("eval model data.tsv --dtype fp8", "--dtype: dtype must be one of"),
    ("eval model data.tsv --max_length 5000", "--max_length: must be in [3, 2048]"),
    ("eval model data.tsv --save_embeddings", "--save_embeddings needs a value"),
    ("eval model data.tsv --device gpu", "--device: must be cpu, cuda, cuda:N or mps, not 'gpu'"),
    # finetune
    ("finetune model data.tsv out --learning_rate 1e-4", "unknown flag --learning_rate"),
    ("finetune model data.tsv out --lr 0", "--lr: must be > 0, not 0.0"),
    ("finetune model data.tsv out --lr -1e-4", "--lr: must be > 0"),
    ("finetune model data.tsv out --epochs 0", "--epochs: must be > 0"),
    ("finetune model data.tsv out --max_steps 0", "--max_steps: must be > 0"),
    ("finetune model data.tsv out --max_steps ten", "--max_steps: expected an integer"),
    ("finetune model data.tsv out --batch_size 0", "--batch_size: must be > 0"),
    ("finetune model data.tsv out --grad_accum 0", "--grad_accum: must be > 0"),
    ("finetune model data.tsv out --warmup_steps -1", "--warmup_steps: must be >= 0"),
    ("finetune model data.tsv out --adam_beta1 1.0", "--adam_beta1: must be in [0, 1)"),
    ("finetune model data.tsv out --precision fp16", "--precision: must be one of auto, fp32, bf16"),
    ("finetune model data.tsv out --freeze both", "--freeze: must be one of vision, text"),
    ("finetune model data.tsv out --gradient_checkpointing nah", "--gradient_checkpointing: expected true/false"),
    ("finetune model data.tsv out --eval_every 0", "--eval_every: must be > 0"),
    ("finetune model data.tsv out --keep_last 0", "--keep_last: must be > 0"),
    ("finetune model data.tsv out --grad_cache_chunk 0", "--grad_cache_chunk: must be > 0"),
    ("finetune model data.tsv out --grad_cache_chunk 4 --grad_accum 2", "--grad_cache_chunk with --grad_accum"),
    ("finetune model data.tsv out --lora_rank 0", "--lora_rank: must be > 0"),
    ("finetune model data.tsv out --lora_rank 4 --lora_targets qkv,attn", "unknown module 'attn'"),
    ("finetune model data.tsv out --lora_rank 4 --freeze text --lora_targets text.qkv", "no adapter in the trained"),
    ("finetune model data.tsv out --lora_dropout 0.1", "need --lora_rank"),
    ("finetune model data.tsv out --num_workers -2", "--num_workers: must be >= 0"),
    ("finetune model missing.tsv out", "error: training data"),
    ("finetune model data.tsv out --images missing_dir", "--images: missing_dir is not a folder"),
    ("finetune model data.tsv out --val missing.jsonl", "--val: missing.jsonl: no such file"),
    ("finetune model data.tsv out --val_images missing_dir", "--val_images: missing_dir is not a folder"),
    ("finetune model data.tsv out --max_length 2049", "--max_length: must be in [3, 2048]"),
    ("finetune model data.tsv out surplus", "unexpected argument 'surplus'"),
    ("finetune model data.tsv out --device cuda0", "--device: must be cpu, cuda, cuda:N or mps"),
    # export
    ("export model out --format tflite", "--format: must be one of hf, onnx, openvino, paddle, open_clip, not 'tflite'"),
    ("export model out.pdparams --format paddle --layout hf", "--layout: must be one of official, paddlenlp"),
    ("export model out --format onnx --opset 0", "--opset: must be in [14, 99]"),
    ("export model out --vocab missing.txt", "--vocab: missing.txt: no such file"),
    ("export model", "missing OUT"),
    ("export model out --format onnx --layout paddlenlp", "--layout applies only to --format paddle, not onnx"),
    ("export model out --opset 17", "--opset applies only to --format onnx, not hf"),
    ("export model out --format onnx --vocab vocab.txt", "--vocab applies only to --format hf or open_clip, not onnx"),
    ("export model out --format hf --hub_id me/model", "--hub_id applies only to --format open_clip, not hf"),
    ("export model out --format open_clip --hub_id me/model@v1", "--hub_id: must be a Hub model id ORG/NAME"),
    ("export model out.pdparams --format paddle --vocab vocab.txt", "--vocab applies only to --format hf"),
    ("export model out --fromat onnx", "unknown flag --fromat (did you mean --format?)"),
    # serve
    ("serve model --gallery gallery --images images --port 70000", "--port: must be in [0, 65535], not 70000"),
    ("serve model --gallery gallery --images images --port -1", "--port: must be in [0, 65535]"),
    ("serve model --gallery missing_dir --images images", "--gallery: missing_dir is not a folder"),
    ("serve model --gallery gallery --images missing_dir", "--images: missing_dir is not a folder"),
    ("serve model --gallery gallery --images images --max_k 0", "--max_k: must be > 0"),
    ("serve model --gallery gallery --images images --max_batch 0", "--max_batch: must be > 0"),
    ("serve model --gallery gallery --images images --max_wait_ms -1", "--max_wait_ms: must be >= 0"),
    ("serve model --gallery gallery --images images --max_upload_mb 0", "--max_upload_mb: must be > 0"),
    ("serve model --gallery gallery --images images --decode_workers 0", "--decode_workers: must be > 0"),
    ("serve model --gallery gallery --images images --dtype double", "--dtype: dtype must be one of"),
    ("serve model --gallery gallery --images images --log_level loud", "--log_level: must be one of"),
    ("serve model --gallery gallery --images images --faiss perhaps", "--faiss: expected true/false"),
    ("serve model --gallery gallery", "missing IMAGES"),
    ("serve model --gallery gallery --images images --device tpu", "--device: must be cpu, cuda, cuda:N or mps"),
    # index
    ("index model images", "give the database as --db PATH.db (embedded) or --uri"),
    ("index model images --db photos.db --uri http://127.0.0.1:19530", "one of them"),
    ("index model images --db photos.sqlite", "the embedded database is a folder whose name ends in .db"),
    ("index model images --uri ftp://host:1", "expected http://HOST:PORT"),
    ("index model images,missing_dir --db photos.db", "photo folder 'missing_dir' is not a folder"),
    ("index model images,images --db photos.db", "the photo folders overlap"),
    ("index model images --db photos.db --batch_size 0", "--batch_size: must be > 0"),
    ("index model images --db photos.db --num_workers 0", "--num_workers: must be > 0"),
    ("index model images --db photos.db --dtype fp64", "--dtype: dtype must be one of"),
    ("index model images --db photos.db --device tpu", "--device: must be cpu, cuda, cuda:N or mps"),
    ("index model images --db photos.db --reindex maybe", "--reindex: expected true/false"),
    ("index missing_dir images --db photos.db", "--model: missing_dir is not a folder"),
    ("index model images --db photos.db", "model has no config.json: give a directory written by convert.py"),
    ("index model --db photos.db", "give the photo folders to index, or --from_embeddings OUT"),
    ("index model images --from_embeddings gallery --db photos.db", "or --from_embeddings OUT, not both"),
    ("index model --from_embeddings gallery --db photos.db --dtype float16", "--dtype does not apply to"),
    ("index model --from_embeddings missing_dir --db photos.db", "--from_embeddings: missing_dir is not a folder"),
    ("index model --from_embeddings gallery --db photos.db --batch_size 0", "--batch_size: must be > 0"),
    ("index model --from_embeddings gallery --db photos.db", "model has no config.json"),
    # dedup
    ("dedup gallery --threshold 1.5", "--threshold: must be in [-1, 1], not 1.5"),
    ("dedup gallery --threshold -2", "--threshold: must be in [-1, 1]"),
    ("dedup gallery --chunk_size 0", "--chunk_size: must be > 0"),
    ("dedup gallery --examples -1", "--examples: must be >= 0"),
    ("dedup missing_dir", "--embeddings: missing_dir is not a folder"),
    ("dedup gallery --images missing_dir", "--images: missing_dir is not a folder"),
    ("dedup gallery --faiss 2", "--faiss: expected true/false"),
    ("dedup gallery --threshold", "--threshold needs a value"),
    # kernels
    ("kernels --measure maybe", "--measure: expected true/false"),
    ("kernels --mesure", "unknown flag --mesure"),
    ("kernels extra", "MEASURE: expected true/false"),
    # the console itself
    ("embedd images model out", "unknown command 'embedd'"),
]


def _argv(case: str, place: Dict[str, str]) -> List[str]:
    import shlex

    return [token.format(**place) for token in shlex.split(case)]


def test_every_subcommand_has_mistake_cases():
    assert {case.split()[0] for case, _ in MISTAKES} >= set(COMMANDS)


@pytest.mark.parametrize("case,fragment", MISTAKES, ids=[case for case, _ in MISTAKES])
def test_a_mistake_is_one_error_line_before_any_work(case, fragment, place, tripwires, tmp_path, capsys):
    before = listing(tmp_path)
    code, out, err = run(_argv(case, place), capsys)
    assert (code, out) == (cli.EXIT_BAD_INPUT, ""), err
    assert err.startswith("error: ") and len(err.splitlines()) == 1, err
    assert fragment in err, err
    assert "Traceback" not in err
    assert listing(tmp_path) == before


def test_the_tripwires_catch_work(place, tripwires, tmp_path, capsys):
    """A correct command line does reach a tripwire (so the cases above prove "before any work")."""
    assert any(name.endswith("load_pretrained") for name in tripwires)
    for argv in (["similarity", "--model", "model"], ["convert", "--src", "src.pdparams", "--dst", "out"],
                 ["export", "model", "out", "--format", "paddle"], ["embed", "images", "model", "out"]):
        with pytest.raises(WorkStarted):
            run_command(COMMANDS, name="ernievil2", argv=argv)


def test_the_value_lists_are_read_from_their_tables():
    from ernievil2torch import constants
    from ernievil2torch.conversion.layouts import LAYOUTS

    from ernievil2torch.training import settings
    from ernievil2torch.apps.retrieval import commands as retrieval

    assert (settings.PRECISIONS, settings.TOWERS, retrieval.PROTOCOLS) == (constants.PRECISIONS, constants.TOWERS,
                                                                           constants.PROTOCOLS)
    for command, flag, table in (("finetune", "precision", constants.PRECISIONS),
                                 ("finetune", "freeze", constants.TOWERS), ("eval", "protocol", constants.PROTOCOLS),
                                 ("embed", "kind", constants.EMBED_KINDS), ("export", "layout", tuple(LAYOUTS))):
        assert COMMANDS[command].checks[flag].rule.startswith(f"one of {', '.join(table)}"), (command, flag)
    for alias in constants.DTYPE_ALIASES:
        assert alias in checks.DTYPE.rule and alias in checks.DTYPE_OR_KEEP.rule
    assert constants.KEEP_DTYPE in checks.DTYPE_OR_KEEP.rule and constants.KEEP_DTYPE not in checks.DTYPE.rule


def test_every_device_flag_has_the_device_check():
    with_device = [name for name, command in COMMANDS.items()
                   if any(p.name == "device" for p in command.parameters())]
    assert set(with_device) >= {"embed", "eval", "finetune", "serve", "index"}
    assert all(COMMANDS[name].checks.get("device") is checks.DEVICE for name in with_device)


@pytest.mark.parametrize("name,argv", [("embed", "images model out"), ("eval", "model data.tsv"),
                                       ("finetune", "model data.tsv out"),
                                       ("serve", "model --gallery gallery --images images"),
                                       ("index", "model images --db photos.db")])
def test_a_device_this_machine_lacks_is_one_error_before_any_work(name, argv, place, tripwires, tmp_path,
                                                                   monkeypatch, capsys):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    for device, fragment in (("cuda", "cuda was asked for but torch sees no CUDA GPU here (use cpu)"),
                             ("cuda:1", "cuda:1 was asked for but torch sees no CUDA GPU"),
                             ("mps", "mps was asked for but this machine has no usable MPS device")):
        before = listing(tmp_path)
        code, out, err = run([name, *argv.split(), "--device", device], capsys)
        assert (code, out, listing(tmp_path)) == (cli.EXIT_BAD_INPUT, "", before), err
        assert err.startswith(f"error: ernievil2 {name}: --device: {fragment}") and len(err.splitlines()) == 1, err
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    code, out, err = run([name, *argv.split(), "--device", "cuda:2"], capsys)
    assert code == cli.EXIT_BAD_INPUT and "cuda:2 was asked for but torch sees 2 CUDA GPU(s): cuda:0 to cuda:1" in err


def test_a_plot_without_matplotlib_is_refused_before_any_work(place, tripwires, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(checks, "installed", lambda module: module != "matplotlib")
    before = listing(tmp_path)
    code, out, err = run(["similarity", "--model", "model", "--plot", "p.png"], capsys)
    assert (code, out, listing(tmp_path)) == (cli.EXIT_BAD_INPUT, "", before)
    assert err == "error: ernievil2 similarity: --plot: needs matplotlib: pip install 'ernievil2torch[plot]'; " \
                  "see ernievil2 similarity --help\n"


# (argv, what some of the keyword arguments must be): spellings that work as meant.
ACCEPTED: List[Tuple[str, dict]] = [
    ("convert --src src.pdparams --dst out --dtype BF16", {"src": "src.pdparams", "dtype": "bfloat16"}),
    ("convert --dtype=keep --overwrite", {"dtype": "keep", "overwrite": True}),
    ("convert --overwrite --dst 2024", {"overwrite": True, "dst": "2024"}),
    ("convert --nooverwrite", {"overwrite": False}),
    ("convert src.pdparams out --model tiny", {"model": "tiny"}),
    ("convert --dtype half", {"dtype": "float16"}),
    ("check --tiny --seed 3", {"tiny": True, "seed": 3}),
    ("check --paddle src.pdparams --torch model --seed 2 --tiny false", {"seed": 2, "tiny": False}),
    ("export model out --format onnx --opset 18", {"opset": 18}),
    ("export model out --vocab vocab.txt", {"vocab": "vocab.txt"}),
    ("check --tiny False --tiny true", {"tiny": True}),  # a repeated flag: the last value counts
    ("check --min_cosine=-0.5 --feature_atol 1e-6", {"min_cosine": -0.5, "feature_atol": 1e-6}),
    ("similarity --model model --images {img},{img} --texts 一张猫的照片,一张狗的照片 --max_length 64",
     {"images": ["{img}", "{img}"], "texts": ["一张猫的照片", "一张狗的照片"], "max_length": 64}),
    ("classify --model model --images {img} --labels 猫,狗,汽车", {"labels": ["猫", "狗", "汽车"]}),
    ("embed images model out --kind image --batch_size 128 --num_workers 4",
     {"inputs": "images", "model_dir": "model", "out": "out", "batch_size": 128, "num_workers": 4}),
    ("embed images model out --normalize FALSE --progress No --batch-size 8 --num_workers=0",
     {"normalize": False, "progress": False, "batch_size": 8, "num_workers": 0}),
    ("embed images model out --normalize --overwrite 1", {"normalize": True, "overwrite": True}),
    ("embed {img},{img} model out", {"inputs": ["{img}", "{img}"]}),
    ("embed 'images/*.png' model out --dtype bf16", {"inputs": "images/*.png", "dtype": "bfloat16"}),
    ("search queries.npy gallery hits.tsv --k 10 --normalize 0", {"k": 10, "normalize": False}),
    ("eval model data.tsv --progress=false --protocol pairs", {"progress": False, "protocol": "pairs"}),
    ("eval model data.tsv --progress FALSE --progress=TRUE", {"progress": True}),
    ("finetune model data.tsv out --images images --val data.tsv --val_images images --batch_size 32 --epochs 5 "
     "--resume", {"images": "images", "batch_size": 32, "epochs": 5, "resume": True}),
    ("finetune model data.tsv out --gradient_checkpointing false --lr=1e-4 --max_steps 100",
     {"gradient_checkpointing": False, "lr": 1e-4, "max_steps": 100}),
    ("finetune model data.tsv out --precision BF16 --freeze text", {"precision": "bf16", "freeze": "text"}),
    ("finetune model data.tsv out --gradient_checkpointing YES --eval_at_start no",
     {"gradient_checkpointing": True, "eval_at_start": False}),
    ("export model model_state.pdparams --format paddle --layout paddlenlp --overwrite",
     {"format": "paddle", "layout": "paddlenlp", "overwrite": True}),
    ("serve model --gallery gallery --images images --port 0 --cors_origins http://a,http://b --faiss yes",
     {"port": 0, "cors_origins": ["http://a", "http://b"], "faiss": True}),
    ("dedup gallery --threshold -0.5 --images images --faiss", {"threshold": -0.5, "faiss": True}),
    ("dedup gallery --out=--odd-name", {"out": "--odd-name"}),
    ("dedup -- gallery", {"embeddings": "gallery"}),
    ("eval model data.tsv --device cpu", {"device": "cpu"}),
    ("similarity --model model --texts '(2019)',[x]y", {"texts": ["(2019)", "[x]y"]}),
]


@pytest.mark.parametrize("case,expected", ACCEPTED, ids=[case for case, _ in ACCEPTED])
def test_a_correct_spelling_means_what_it_says(case, expected, place):
    name, *argv = _argv(case, place)
    kwargs = parse_arguments(COMMANDS[name], argv, f"ernievil2 {name}")
    wanted = {key: ([item.format(**place) for item in value] if isinstance(value, list)
                    else value.format(**place) if isinstance(value, str) else value)
              for key, value in expected.items()}
    assert {key: kwargs.get(key) for key in wanted} == wanted
    for key, value in wanted.items():
        assert type(kwargs[key]) is type(value), key  # noqa: E721 - an int must not arrive as a bool or float


def test_convert_model_picks_one_registered_size_when_several_fit(tmp_path, monkeypatch, capsys):
    import dataclasses
    import json

    from ernievil2torch.config import register_model, tiny_config, unregister_model
    from ernievil2torch.verify.synthetic import write_synthetic_pdparams

    monkeypatch.chdir(tmp_path)
    write_synthetic_pdparams(tmp_path / "tiny.pdparams", tiny_config(), "official", seed=1)
    twin = dataclasses.replace(tiny_config(), text=dataclasses.replace(tiny_config().text, layer_norm_eps=1e-6))
    register_model("tiny-twin", twin)
    try:
        code, out, err = run(["convert", "tiny.pdparams", "out"], capsys)
        assert code == cli.EXIT_BAD_INPUT and "fit several registered models" in err, err
        code, out, err = run(["convert", "tiny.pdparams", "out", "--model", "tiny-twin"], capsys)
        assert code == 0, err
        assert json.loads((tmp_path / "out" / "config.json").read_text())["name"] == "tiny-twin"
    finally:
        unregister_model("tiny-twin")
    code, out, err = run(["convert", "tiny.pdparams", "out2", "--model", "tiny-twin"], capsys)
    assert code == cli.EXIT_BAD_INPUT and "--model: must be a registered model name (" in err
    assert not (tmp_path / "out2").exists()


def test_the_library_resolves_device_names_with_the_same_rule():
    from ernievil2torch.errors import InputError
    from ernievil2torch.runtime.distributed import pick_device

    with pytest.raises(InputError, match=r"^device: must be cpu, cuda, cuda:N or mps, not 'gpu'$"):
        pick_device("gpu", local_rank=0)
