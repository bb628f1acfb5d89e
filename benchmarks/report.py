"""BENCHMARKS.md from what one ``benchmarks/run.py`` run measured: the renderer, apart from the measuring code.

:func:`render` turns a :class:`RunFacts` (the run's command, machine, versions, sizes) and a :class:`Measured` (the
timed cases after their rounds, accuracy rows, notes and the sections measured beside the rounds) into the report's
markdown, unsealed. It measures nothing and holds only what it is given; every target in :data:`TARGETS` is
evaluated on the given figures as met, MISSED (never rounded up) or not measured. :func:`to_record` /
:func:`from_record` turn both into JSON-ready data and back (every call time kept), so a report can be rendered
again from its record without measuring.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from cases import Case, fmt, paired_ratio, share_of_ceiling

TARGETS = {"image_fp32_ceiling": 85.0, "text_fp32_ceiling": 90.0, "bf16_ceiling": 70.0, "bf16_cosine": 0.999,
           "conversion_time": 2.0, "conversion_rss": 1.3, "embed_text_lengths": 2.0, "embed_image_share": 85.0}

Profile = Dict[Tuple[str, str], List[Tuple[str, float]]]


@dataclass(frozen=True)
class RunFacts:
    """What the report's header states about a run. ``image_shape``: (batch, channels, size, size);
    ``text_shape``: (batch, tokens); ``image_flop`` / ``text_flop``: executed FLOPs per item; ``machine``: as
    ``environment.machine_info`` gives it; ``smoke``: the tiny test config (``--smoke``)."""

    command: str
    machine: Dict[str, str]
    versions: Dict[str, str]
    smoke: bool
    rounds: int
    image_shape: Tuple[int, int, int, int]
    text_shape: Tuple[int, int]
    image_flop: float
    text_flop: float


@dataclass
class Measured:
    """What a run measured: the cases (their rounds done), accuracy rows ``(comparison, result)``, notes, and the
    sections measured beside the rounds. ``gpu``: the GPU section's markdown or why there is none;
    ``frontends``: (command, markdown), command "" when not run; ``conversion`` / ``embed``: as
    ``subprocess_runs`` returns them, None when not measured; ``profile``: {(tower, precision): [(operator,
    share %)]}."""

    cases: List[Case] = field(default_factory=list)
    accuracy: List[Tuple[str, str]] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
    profile: Profile = field(default_factory=dict)
    gpu: str = ""
    frontends: Tuple[str, str] = ("", "")
    conversion: Optional[dict] = None
    embed: Optional[dict] = None


def _recorded_case() -> None:
    raise RuntimeError("a case read from a record has its times; it is not run again")


def to_record(facts: RunFacts, measured: Measured) -> dict:
    """Everything :func:`render` reads, as JSON-ready data (cases without their callables)."""
    cases = [{"name": c.name, "group": c.group, "items": c.items, "flop": c.flop, "precision": c.precision,
              "times": list(c.times)} for c in measured.cases]
    profile = [[tower, precision, [[name, share] for name, share in rows]]
               for (tower, precision), rows in measured.profile.items()]
    return {"facts": asdict(facts), "cases": cases, "accuracy": [list(row) for row in measured.accuracy],
            "notes": list(measured.notes), "profile": profile, "gpu": measured.gpu,
            "frontends": list(measured.frontends), "conversion": measured.conversion, "embed": measured.embed}


def from_record(record: dict) -> Tuple[RunFacts, Measured]:
    """The inverse of :func:`to_record`: ``render(*from_record(to_record(f, m))) == render(f, m)``."""
    facts = dict(record["facts"])
    facts["image_shape"], facts["text_shape"] = tuple(facts["image_shape"]), tuple(facts["text_shape"])
    cases = [Case(c["name"], c["group"], _recorded_case, c["items"], c["flop"], c["precision"], list(c["times"]))
             for c in record["cases"]]
    profile = {(tower, precision): [(name, share) for name, share in rows]
               for tower, precision, rows in record["profile"]}
    conversion = record["conversion"]
    if conversion is not None:
        conversion = dict(conversion, rows=[tuple(row) for row in conversion["rows"]])
    measured = Measured(cases=cases, accuracy=[tuple(row) for row in record["accuracy"]], notes=record["notes"],
                        profile=profile, gpu=record["gpu"], frontends=tuple(record["frontends"]),
                        conversion=conversion, embed=record["embed"])
    return RunFacts(**facts), measured


def case_of(cases: List[Case], group: str, name: str) -> Optional[Case]:
    return next((c for c in cases if c.group == group and c.name == name), None)


def ratio_cell(case: Case, base: Optional[Case]) -> str:
    return f"{fmt(paired_ratio(case, base))}x" if base else "n/a"


def share_cell(case: Case, cases: List[Case], precision: str) -> str:
    share = share_of_ceiling(case, cases, precision)
    return f"{share:.0f} %" if share else "n/a"


def throughput_lines(cases: List[Case]) -> List[str]:
    """The CPU throughput table; 'x' and 'of ceiling' columns are medians of per-round ratios."""
    lines = ["| tower | implementation | precision | items/s [min-max] | x Paddle reference | x PaddleNLP | "
             "executed GFLOP/s | of fp32 GEMM ceiling | of bf16 GEMM ceiling |",
             "|---|---|---|---|---|---|---|---|---|"]
    for group in ("image", "text"):
        paddle, paddlenlp = case_of(cases, group, "Paddle reference"), case_of(cases, group, "PaddleNLP ErnieViLModel")
        for c in (c for c in cases if c.group == group):
            lo, hi = c.spread
            lines.append(f"| {group} | {c.name} | {c.precision} | {fmt(c.rate)} [{fmt(lo)}-{fmt(hi)}] | "
                         f"{ratio_cell(c, paddle)} | {ratio_cell(c, paddlenlp)} | {fmt(c.gflops, 1)} | "
                         f"{share_cell(c, cases, 'fp32')} | {share_cell(c, cases, 'bf16')} |")
    return lines


def min_cosines(accuracy: List[Tuple[str, str]], label: str) -> Dict[str, float]:
    """{tower: min cosine} from the accuracy row named ``label``."""
    row = dict(accuracy).get(label, "")
    return {tower: float(value) for tower, value in re.findall(r"(image|text) min cosine ([0-9.]+)", row)}


def verdict(ok: Optional[bool]) -> str:
    return "not measured" if ok is None else "met" if ok else "MISSED"


def embed_lines(embed: Optional[dict]) -> List[str]:
    if not embed:
        return ["not measured."]
    return [f"The cases of `{embed['command']}` (full-size synthetic model, random weights):", "", "```",
            *embed["lines"], "```"]


def target_rows(cases: List[Case], accuracy: List[Tuple[str, str]], conversion: Optional[dict],
                embed: Optional[dict] = None) -> List[str]:
    """Every target of :data:`TARGETS` evaluated on this run's figures: met, MISSED (never rounded up) or not
    measured."""
    rows = ["| target | figure | verdict |", "|---|---|---|"]
    for group in ("image", "text"):
        ours = case_of(cases, group, "ours fp32")
        for peer in ("HF " + ("CLIPVisionModel" if group == "image" else "BertModel"),):
            theirs = case_of(cases, group, peer)
            x = paired_ratio(ours, theirs) if theirs else None
            rows.append(f"| {group} fp32 faster than {peer} | {'n/a' if x is None else f'{x:.2f}x'} | "
                        f"{verdict(None if x is None else x > 1)} |")
    rows += cpu_peer_rows(cases)
    for group in ("image", "text"):
        goal = TARGETS[f"{group}_fp32_ceiling"]
        share = share_of_ceiling(case_of(cases, group, "ours fp32"), cases, "fp32")
        rows.append(f"| {group} fp32 >= {goal:.0f} % of fp32 GEMM ceiling | {share:.1f} % | {verdict(share >= goal)} |")
    for group in ("image", "text"):
        bf16 = [c for c in cases if c.group == group and c.name.startswith("ours") and c.precision == "bf16"]
        goal, cos_goal = TARGETS["bf16_ceiling"], TARGETS["bf16_cosine"]
        if not bf16 or not any(c.group == "gemm" and c.precision == "bf16" for c in cases):
            rows.append(f"| {group} bf16 >= {goal:.0f} % of bf16 GEMM ceiling, cosine >= {cos_goal} | n/a | "
                        "not measured |")
            continue
        best = max(bf16, key=lambda c: c.rate)
        share = share_of_ceiling(best, cases, "bf16")
        cosine = min_cosines(accuracy, f"{best.name} vs ours fp32")[group]
        rows.append(f"| {group} bf16 >= {goal:.0f} % of bf16 GEMM ceiling (best: {best.name}) | {share:.1f} % | "
                    f"{verdict(share >= goal)} |")
        rows.append(f"| {group} bf16 cosine >= {cos_goal} to fp32 ({best.name}) | {cosine:.6f} | "
                    f"{verdict(cosine >= cos_goal)} |")
    if conversion:
        time_ratio, rss_ratio = conversion_ratios(conversion)
        rows.append(f"| conversion time <= {TARGETS['conversion_time']:g}x sha256sum | {time_ratio:.2f}x | "
                    f"{verdict(time_ratio <= TARGETS['conversion_time'])} |")
        rows.append(f"| conversion peak RSS <= {TARGETS['conversion_rss']:g}x checkpoint | {rss_ratio:.2f}x | "
                    f"{verdict(rss_ratio <= TARGETS['conversion_rss'])} |")
    if embed:
        goal = TARGETS["embed_text_lengths"]
        rows.append(f"| `embed --kind text`: realistic captions >= {goal:g}x the texts/s of 46-character ones | "
                    f"{embed['text_ratio']:.2f}x | {verdict(embed['text_ratio'] >= goal)} |")
        goal = TARGETS["embed_image_share"]
        rows.append(f"| `embed --kind image` loop >= {goal:.0f} % of model-only images/s (bf16) | "
                    f"{embed['image_share']:.1f} % | {verdict(embed['image_share'] >= goal)} |")
    return rows


def cpu_peer_rows(cases: List[Case]) -> List[str]:
    """Ours against the CPU runtimes a deploying user would pick, per tower and precision: fp32 eager against ONNX
    Runtime and OpenVINO's f32 hint; our fastest bf16 case against OpenVINO's default hint where that hint is bf16
    (a CPU without bf16 instructions has no bf16 cell: OpenVINO's default there is f32, the fp32 row)."""
    rows = []
    for group in ("image", "text"):
        ours = case_of(cases, group, "ours fp32")
        for peer in ("ONNX Runtime (our export)", "OpenVINO f32 hint (our export)"):
            theirs = case_of(cases, group, peer)
            x = paired_ratio(ours, theirs) if ours and theirs else None
            rows.append(f"| {group} fp32: ours >= {peer} | {'n/a' if x is None else f'{x:.2f}x'} | "
                        f"{verdict(None if x is None else x >= 1)} |")
        default = next((c for c in cases if c.group == group and c.name.startswith("OpenVINO default hint")), None)
        if default is None or default.precision != "bf16":
            continue
        bf16 = [c for c in cases if c.group == group and c.name.startswith("ours") and c.precision == "bf16"]
        best = max(bf16, key=lambda c: c.rate) if bf16 else None
        x = paired_ratio(best, default) if best else None
        rows.append(f"| {group} bf16: ours ({best.name if best else 'none'}) >= {default.name} | "
                    f"{'n/a' if x is None else f'{x:.2f}x'} | {verdict(None if x is None else x >= 1)} |")
    return rows


def conversion_ratios(conversion: dict) -> Tuple[float, float]:
    """(median convert.py time / median sha256sum time, worst convert.py peak RSS / checkpoint size)."""
    rows = conversion["rows"]
    seconds = {name: float(np.median([s for n, s, _ in rows if n == name])) for name in ("sha256sum", "convert.py")}
    rss = max(r for n, _, r in rows if n == "convert.py")
    return seconds["convert.py"] / seconds["sha256sum"], rss / conversion["size_mib"]


def conversion_lines(conversion: Optional[dict]) -> List[str]:
    if not conversion:
        return ["not measured."]
    lines = [f"Synthetic full-size official-layout checkpoint, {fmt(conversion['size_mib'], 0)} MiB; "
             "`/usr/bin/time -v`, alternating runs:", "",
             "| command | wall s | peak RSS MiB | RSS / checkpoint size |", "|---|---|---|---|"]
    lines += [f"| {name} | {fmt(seconds)} | {fmt(rss, 0)} | {fmt(rss / conversion['size_mib'])} |"
              for name, seconds, rss in conversion["rows"]]
    return lines


def gemm_lines(cases: List[Case]) -> List[str]:
    lines = ["| GEMM | GFLOP/s [min-max] |", "|---|---|"]
    for c in (c for c in cases if c.group == "gemm"):
        lo, hi = c.spread
        lines.append(f"| {c.name} | {fmt(c.gflops, 1)} [{fmt(lo * c.flop / 1e9, 1)}-{fmt(hi * c.flop / 1e9, 1)}] |")
    return lines


def profile_lines(shares: Profile) -> List[str]:
    if not shares:
        return ["not measured."]
    lines = ["One profiled call per tower and precision (ours, eager; `torch.profiler`, self CPU time), the largest "
             "operators (`aten::addmm` is the Linear layers' GEMMs, bias included):", "",
             "| tower | precision | operator | share of the call |", "|---|---|---|---|"]
    lines += [f"| {tower} | {precision} | `{name}` | {share:.1f} % |" for (tower, precision), rows in shares.items()
              for name, share in rows]
    return lines


def header_lines(facts: RunFacts, quoting: bool = False) -> List[str]:
    """The title, the command of the run, and its machine / threads / versions / method / FLOPs list (``quoting``:
    the report ends in other runs' quoted reports, which the "one run" sentence then leaves out)."""
    machine = facts.machine
    version_text = ", ".join(f"{k} {v}" for k, v in facts.versions.items())
    size = "tiny test config (--smoke)" if facts.smoke else "random full-size weights"
    images, channels, height, width = facts.image_shape
    texts, tokens = facts.text_shape
    return [
        "# Benchmarks", "",
        "Generated by `benchmarks/run.py`; every number below"
        + (" (up to the quoted reports at the end, which name their own runs)" if quoting else "")
        + " comes from one run of:", "",
        f"    {facts.command}", "",
        f"- machine: {machine['cpu']}, {machine['cpus']} logical CPUs, ISA flags: {machine['flags'] or 'none listed'}; "
        f"{machine['os']}",
        f"- threads: {machine['threads']} for every framework (torch.set_num_threads, OMP_NUM_THREADS for Paddle "
        f"and the PaddleNLP worker, ONNX Runtime intra-op threads)",
        f"- versions: {version_text}",
        f"- method: {size} (the same values in ours, the Paddle reference, PaddleNLP and the ONNX export; HF peers "
        f"have their own), image batch {images} x {channels} x {height} x {width}, text batch {texts} x {tokens} "
        f"tokens (no padding); {facts.rounds} alternating rounds (each case once per round, order rotated), median "
        f"reported, [min-max] over rounds; ratios between cases (x, of ceiling, faster than) are medians of "
        f"per-round ratios; warm-up calls excluded.",
        f"- executed FLOPs (`benchmarks/flops.py`, matrix products, the last block computing one row): "
        f"{facts.image_flop / 1e9:.2f} GFLOP per image, {facts.text_flop / 1e9:.2f} GFLOP per text; 'of ceiling' = "
        f"executed GFLOP/s / the best torch.matmul GFLOP/s of that precision in the same round.",
    ]


#: Sealed reports of other scripts that BENCHMARKS.md quotes whole after its own figures (the photo search on
#: Milvus: approximate against exact search, the bulk load, the service under load on a library).
COMPANIONS = ("benchmarks/milvus_ann.md", "benchmarks/bulk_load.md", "benchmarks/serve_load_library.md")


def quoted_companions(root: Path, names: Sequence[str] = COMPANIONS) -> List[Tuple[str, str, str]]:
    """``(name, command, body)`` of each companion report present under ``root``, its seal checked first (a broken
    seal raises: a report edited by hand is not quoted)."""
    from stamp import read_sealed

    out = []
    for name in names:
        path = root / name
        if path.exists():
            _, command, body = read_sealed(path.read_text(encoding="utf-8"))
            out.append((name, command, body.rstrip("\n")))
    return out


def companion_lines(companions: Sequence[Tuple[str, str, str]]) -> List[str]:
    """The quoted reports, their headings moved two levels down, each introduced by its file and command."""
    lines: List[str] = []
    for name, command, body in companions:
        lines += ["", f"### From `{name}`", "", f"Quoted whole from its sealed report (a separate run of `{command}`; "
                  "its own machine line below):", ""]
        lines += [("##" + line) if line.startswith("#") else line for line in body.splitlines()]
    return lines


def render(facts: RunFacts, measured: Measured, companions: Sequence[Tuple[str, str, str]] = ()) -> str:
    """The whole report (unsealed: ``stamp.seal`` adds the seal line) from what the run measured, followed by the
    ``companions`` (:func:`quoted_companions`) when given."""
    lines = header_lines(facts, quoting=bool(companions))
    lines += ["", "## CPU throughput", ""] + throughput_lines(measured.cases)
    lines += ["", "### Targets on this run", ""] + target_rows(measured.cases, measured.accuracy,
                                                                measured.conversion, measured.embed)
    lines += ["", "### GEMM ceilings (same rounds)", ""] + gemm_lines(measured.cases)
    lines += ["", "### Accuracy of the measured paths", "", "| comparison | result |", "|---|---|"]
    lines += [f"| {a} | {b} |" for a, b in measured.accuracy]
    lines += ["", "### Where the time goes", ""] + profile_lines(measured.profile)
    lines += ["", "## GPU", "", measured.gpu]
    frontends_cmd, frontends = measured.frontends
    lines += ["", "## Front ends", ""] + ([f"`{frontends_cmd}`, same threads:", ""] if frontends_cmd else [])
    lines += [frontends, "", "## Conversion", ""] + conversion_lines(measured.conversion)
    lines += ["", "## The embed command", ""] + embed_lines(measured.embed)
    if measured.notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in measured.notes]
    if companions:
        lines += ["", "## Photo search on Milvus (other runs, quoted)", "",
                  "The figures above come from the run named at the top; the reports below come from their own "
                  "scripts' runs, each sealed by its script and checked when this file was written."]
        lines += companion_lines(companions)
    return "\n".join(lines) + "\n"
