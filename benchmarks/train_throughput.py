"""Training throughput: `python -m mtl.train` against two usual ways of training the same
multi-task workload.

Workload
    TextComplexityDE19 (regression) and SST-2 (classification) from the data root
    ($MTL_DATA_ROOT, else ../shared/data), tokenized once by mtl (max_length 128), one task
    per step chosen uniformly, batches of --batch rows, the packaged MiniLM weights (or, with
    --size base, a random BERT-base-sized encoder), mean pooling, a linear head per task.
    With --encoder, the mtl contenders train each named encoder config instead (see below).

Contenders
    * tutorial: transformers BertModel, every row padded to 128, fp32, plain AdamW, one
      shuffled pass per task (as a DataLoader per task), the loss read every step.
    * careful:  transformers BertModel, random batches padded to their longest row, bf16
      autocast, AdamW(fused=True), the loss read every step.
    * encoder alone: mtl's encoder on mtl's length-bucketed batches, bf16, fused AdamW, freed
      host memory kept for reuse (mtl/host_memory.py), and nothing else (no trainer, no
      per-step read): the rate `mtl.train` can approach.
    * mtl:      `python -m mtl.train experiment=complexity_sentiment data.batch_size=<batch>`,
      the whole trainer (bucketed batches, balancer, feedback, logging), timed by a callback.
    * mtl token budget: the same with `data.max_tokens=<batch x 64>`: short-text batches get
      more rows (not the same rows per batch, so it has its own line).
    * mtl F.dropout, mtl glibc malloc (only with --only): `mtl` without one of its CPU tricks,
      patched out in the training process: torch's `nn.Dropout`/`F.dropout` in the encoder
      instead of mtl/dropout.py, or malloc left at glibc's defaults instead of
      mtl/host_memory.py. Each prints `<trick>: N ms/step with, N without, ratio N.NNx`
      (medians over rounds; the ratio is time without / time with, above 1 where it helps),
      then the same ratio in each round and its median.

    All share one recipe: AdamW at 1e-4 (encoder) and 1e-3 (heads), linear warmup and decay,
    clipping at 1.0, mean pooling, the same rows per batch for every task, and the same task
    at each step (mtl's uniform draw with --seed, which also seeds the data split, the heads
    and the row order), so the mix of long and short batches is the same. Each contender runs
    in its own process (its peak memory is its own); rounds interleave them and the median of
    --rounds is reported. Time counts from step --warmup to the end; after the last step each
    contender's validation score (mean of the tasks' scores: r2 and F1) is measured.

Encoders (--encoder, repeatable)
    Each value is an encoder config of conf/encoder/ (`minilm`, `multilingual_e5_small`),
    optionally followed by mtl.train overrides separated by spaces, such as
    "multilingual_e5_small encoder.freeze_embeddings=false". The mtl contenders run once per
    value in every round (labelled `mtl [<value>]` unless it is the default `minilm`); the
    baselines are MiniLM's and run only when --only names them or MiniLM is the only encoder.
    Per value after the first, the "mtl" contender's time per real token is compared with the
    first value's: `per real token (seconds), <value> vs <first>: ratio per round ..., median
    N.NNx` (encoders split texts into different numbers of tokens, so time per step alone
    misleads), and the same in the process's CPU time (`cpu_seconds`), which other work on a
    shared machine disturbs less (run with OMP_WAIT_POLICY=PASSIVE there, so that threads
    waiting for a descheduled one sleep instead of spinning).
    Each mtl run also reports its checkpoint's size (last.ckpt) and what its checkpoints/
    folder holds beside (frozen weights stored once per run).

Prints per contender: real (non-padding) tokens/s, padding efficiency (real / computed
tokens), peak RSS (or GPU memory), seconds per 100 steps, validation score; then
`ratio vs tutorial: N.Nx`, `ratio vs careful: N.Nx`, `token-budget ratio vs careful: N.Nx`
and `mtl.train vs encoder alone: N%`. With --device cuda, also MFU: FLOPs per real token =
6 x non-embedding parameters + 12 x layers x length x hidden, over the GPU's dense bf16 peak.

Usage
    MTL_DATA_ROOT=../shared/data python benchmarks/train_throughput.py [--steps 40]
        [--warmup 5] [--rounds 3] [--batch 32] [--device cpu|cuda] [--size minilm|base]
        [--precision bf16|fp32] [--encoder minilm [--encoder multilingual_e5_small ...]]
        [--only mtl,"mtl F.dropout","mtl glibc malloc"]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytorch_lightning as pl
import torch

from mtl.data.batching import sorted_batches
from mtl.host_memory import keep_freed_memory

ROOT = Path(__file__).resolve().parents[1]
DATA_ROOT = os.environ.get("MTL_DATA_ROOT", str(ROOT.parent / "shared" / "data"))
MAX_LENGTH = 128
BASE = {"hidden_size": 768, "num_layers": 12, "num_heads": 12, "intermediate_size": 3072}
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12}  # dense bf16 FLOP/s


class ThroughputProbe(pl.Callback):
    """Times training steps [warmup, warmup + steps) and counts their tokens (a callback of the
    mtl run: `+callbacks.probe._target_=train_throughput.ThroughputProbe`)."""

    def __init__(self, path: str, warmup: int, steps: int) -> None:
        self.path, self.warmup, self.steps = Path(path), warmup, steps
        self.real: torch.Tensor | int = 0  # summed on the device: no sync per step
        self.computed = self.rows = 0
        self.started, self.faults, self.cpu = 0.0, 0, 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.warmup:
            _sync()
            self.started, self.faults = time.perf_counter(), _page_faults()
            self.cpu = time.process_time()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step - 1  # the step just trained
        if step >= self.warmup:
            for part in batch["parts"]:
                self.real = self.real + part["attention_mask"].sum()
                self.computed += part["attention_mask"].numel()
                self.rows += part["attention_mask"].shape[0]
        if step == self.warmup + self.steps - 1:
            _sync()
            seconds = time.perf_counter() - self.started
            faults = _page_faults() - self.faults
            result = _result(int(self.real), self.computed, self.rows, seconds, self.steps, faults)
            result["cpu_seconds"] = time.process_time() - self.cpu  # steadier on a busy machine
            self.path.write_text(json.dumps(result))
            trainer.should_stop = True


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _page_faults() -> int:
    """Minor page faults of this process so far: each maps a fresh page of host memory."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _result(real: int, computed: int, rows: int, seconds: float, steps: int, faults: int) -> dict:
    if torch.cuda.is_available():
        peak = torch.cuda.max_memory_allocated() / 2**30
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    return {"real": real, "computed": computed, "rows": rows, "seconds": seconds, "steps": steps,
            "peak": peak, "faults": faults}  # fmt: skip


# ---- the baselines --------------------------------------------------------------------------


def workload(seed: int, pad_to_multiple: int = 1) -> dict:
    """Each task's training and validation splits, read and tokenized by mtl (cached)."""
    from hydra import compose, initialize_config_dir

    from mtl.config import register
    from mtl.data.loading import DataConfig, load_tasks
    from mtl.pretrained import resolve_pretrained
    from mtl.tasks import parse_task_specs
    from mtl.tokenizer import load_tokenizer

    register()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", ["experiment=complexity_sentiment", f"data.root={DATA_ROOT}",
                                "paths.output_dir=/tmp/unused"])  # fmt: skip
    tokenizer = load_tokenizer(resolve_pretrained("minilm"), MAX_LENGTH)
    cache = str(ROOT / ".cache" / "tokens")
    data_cfg = DataConfig(cache_dir=cache, pad_to_multiple=pad_to_multiple)
    data = load_tasks(parse_task_specs(cfg.task), tokenizer, data_cfg, seed)
    return {name: d.splits for name, d in data.items()}


def hf_encoder(size: str) -> torch.nn.Module:
    """transformers' BertModel: MiniLM's weights, or a random BERT-base."""
    from transformers import BertConfig, BertModel

    from mtl.pretrained import resolve_pretrained

    if size == "base":
        cfg = BertConfig(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                         intermediate_size=3072, attn_implementation="sdpa")  # fmt: skip
        return BertModel(cfg, add_pooling_layer=False)
    return BertModel.from_pretrained(resolve_pretrained("minilm"), add_pooling_layer=False)


def native_encoder(size: str) -> torch.nn.Module:
    """mtl's own encoder, the one its trainer trains (mean pooling, as for MiniLM)."""
    from mtl.encoder import Bert, BertConfig
    from mtl.pretrained import load_pretrained

    if size == "base":
        cfg = BertConfig(hidden_size=768, num_layers=12, num_heads=12, intermediate_size=3072)
        return Bert(dataclasses.replace(cfg, pooling="mean"))
    return load_pretrained("minilm", MAX_LENGTH, pooling="mean")[0]


def run_baseline(way: str, args: argparse.Namespace) -> dict:
    """mtl's recipe (AdamW at 1e-4 for the encoder and 1e-3 for the heads, linear warmup and
    decay, clipping at 1.0, mean pooling, the task mtl.train draws at each step) written one of
    the usual ways, or mtl's encoder alone: its length-bucketed batches, bf16, fused AdamW, no
    per-step read of the loss, and no trainer around it."""
    from torch.optim.lr_scheduler import LambdaLR

    from mtl.data.streams import TaskBatchStream
    from mtl.model import SchedulerConfig, lr_lambda
    from mtl.sampling import UniformSampler

    tutorial, alone = way == "tutorial", way == "encoder alone"
    bf16 = not tutorial and args.precision == "bf16"
    if alone:
        keep_freed_memory()  # as mtl.train does
    splits = workload(args.seed, 32 if alone and args.device == "cuda" else 1)  # as trainer=gpu
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    encoder = (native_encoder if alone else hf_encoder)(args.size).to(device).train()
    C = encoder.config.hidden_size if not alone else encoder.cfg.hidden_size
    heads = torch.nn.ModuleDict(
        {n: torch.nn.Linear(C, s["train"].task.num_outputs) for n, s in splits.items()}
    ).to(device)
    groups = [{"params": list(encoder.parameters()), "lr": 1e-4},
              {"params": list(heads.parameters()), "lr": 1e-3}]  # fmt: skip
    optimizer = torch.optim.AdamW(groups, weight_decay=0.01, fused=not tutorial or None)
    total = args.warmup + args.steps
    schedule = LambdaLR(optimizer, lr_lambda(total, SchedulerConfig()))
    params = [p for g in groups for p in g["params"]]
    rng = random.Random(args.seed)
    names = list(splits)
    tasks = UniformSampler([len(s["train"]) for s in splits.values()], names)  # mtl's draw
    streams = {
        n: TaskBatchStream(n, s["train"].lengths, args.batch, args.seed) for n, s in splits.items()
    }
    orders: dict[str, list[int]] = {n: [] for n in names}

    def next_rows(name: str) -> list[int]:
        if alone:
            return streams[name].next()
        if not orders[name]:  # one shuffled pass after another, like a DataLoader per task
            orders[name] = rng.sample(range(len(splits[name]["train"])), len(splits[name]["train"]))
        rows, orders[name] = orders[name][: args.batch], orders[name][args.batch :]
        return rows

    def encode(part: dict) -> tuple[torch.Tensor, torch.Tensor]:
        ids, mask, types = (x.to(device) for x in _padded(part, MAX_LENGTH if tutorial else None))
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            if alone:
                return encoder(ids, mask, types).pooled, mask
            hidden = encoder(input_ids=ids, attention_mask=mask, token_type_ids=types)[0]
            w = mask.unsqueeze(-1).to(hidden.dtype)
            return (hidden * w).sum(1) / w.sum(1), mask  # mean pooling, as mtl's MiniLM

    real = computed = rows = faults = 0
    started = 0.0
    for step in range(total):
        if step == args.warmup:
            _sync()
            started, faults = time.perf_counter(), _page_faults()
        name = names[tasks.choose(step, seed=args.seed)[0]]  # the task mtl.train trains
        part = splits[name]["train"].batch(next_rows(name))
        pooled, mask = encode(part)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = splits[name]["train"].task.loss(heads[name](pooled), part["labels"].to(device))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        if not alone:
            float(loss)  # the usual per-step loss logging
        if step >= args.warmup:
            real += int(part["attention_mask"].sum())  # on the host: no sync
            computed, rows = computed + mask.numel(), rows + mask.shape[0]
    _sync()
    seconds, faults = time.perf_counter() - started, _page_faults() - faults
    result = _result(real, computed, rows, seconds, args.steps, faults)
    encoder.eval()
    with torch.no_grad():
        scores = []
        for name, parts in splits.items():
            val, metrics = parts["val"], parts["val"].task.metrics().to(device)
            for rows in sorted_batches(val.lengths, 64):
                part = val.batch(rows)
                output = heads[name](encode(part)[0]).float()
                val.task.update_metrics(metrics, output, part["labels"].to(device))
            scores.append(val.task.score({k: float(v) for k, v in metrics.compute().items()}))
    return {**result, "val_score": sum(scores) / len(scores)}


def _padded(part: dict, length: int | None) -> tuple[torch.Tensor, ...]:
    """mtl's batch (padded to its longest row), or every row padded to `length`."""
    ids, mask, types = part["input_ids"], part["attention_mask"], part["token_type_ids"]
    if length is not None:
        pad = length - ids.shape[1]
        ids = torch.nn.functional.pad(ids, (0, pad), value=0)  # [PAD] is 0 in MiniLM's vocab
        mask, types = (torch.nn.functional.pad(x, (0, pad)) for x in (mask, types))
    return ids, mask, types


# ---- mtl ------------------------------------------------------------------------------------

# `mtl` without one of its CPU tricks: the standard thing in its place
ABLATIONS = {"mtl F.dropout": "dropout", "mtl glibc malloc": "host_memory"}


def train_without(ablations: list[str], overrides: list[str]) -> None:
    """`python -m mtl.train <overrides>` in this process, with the named tricks patched out."""
    import runpy

    import mtl.encoder
    import mtl.host_memory

    if "dropout" in ablations:
        mtl.encoder.Dropout = torch.nn.Dropout
        mtl.encoder.dropout = lambda x, p, training=True: torch.nn.functional.dropout(
            x, p, training
        )
    if "host_memory" in ablations:
        mtl.host_memory.keep_freed_memory = lambda: False  # glibc's defaults
    sys.argv = ["mtl.train", *overrides]
    runpy.run_module("mtl.train", run_name="__main__", alter_sys=True)


def run_mtl(
    args: argparse.Namespace, encoder: str, max_tokens: int | None, ablations: list[str]
) -> dict:
    """One mtl.train run of `encoder` ("NAME [override ...]"): the probe's timing, the final
    validation score and the sizes of what its checkpoints/ folder holds."""
    name, *encoder_overrides = encoder.split()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        overrides = [
            "experiment=complexity_sentiment", f"data.root={DATA_ROOT}",
            f"data.batch_size={args.batch}", f"trainer.max_steps={args.warmup + args.steps}",
            "task.sst2.batch_size=null",  # the experiment's 64: the baselines' rows per batch
            f"seed={args.seed}",
            f"trainer.val_check_interval={args.warmup + args.steps}",
            f"hydra.run.dir={tmp}/run",
            "+callbacks.probe._target_=train_throughput.ThroughputProbe",
            f"+callbacks.probe.path={out}", f"+callbacks.probe.warmup={args.warmup}",
            f"+callbacks.probe.steps={args.steps}",
        ]  # fmt: skip
        if max_tokens:
            overrides.append(f"data.max_tokens={max_tokens}")
        if args.device == "cuda":
            overrides.append("trainer=gpu")
        if args.precision == "fp32":
            overrides.append("trainer.precision=32-true")
        if args.size == "base":
            overrides += ["encoder=tiny", "encoder.max_length=128",
                          *(f"encoder.{k}={v}" for k, v in BASE.items())]  # fmt: skip
        else:
            overrides += [f"encoder={name}", *encoder_overrides]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "benchmarks"), str(ROOT)])}
        # every mtl contender starts the same way, patched or not
        cmd = [sys.executable, __file__, "--train-worker", ",".join(ablations), *overrides]
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        if not out.is_file():
            sys.exit(f"the mtl run failed:\n{done.stderr[-3000:]}")
        final = json.loads((Path(tmp) / "run" / "metrics.json").read_text())["final"]
        stored = Path(tmp) / "run" / "checkpoints"
        beside = sum(p.stat().st_size for p in stored.iterdir() if p.suffix != ".ckpt")
        return {**json.loads(out.read_text()), "val_score": final["val/score"],
                "checkpoint": (stored / "last.ckpt").stat().st_size, "beside": beside}  # fmt: skip


# ---- the report -----------------------------------------------------------------------------


def flops_per_token(size: str, length: float) -> float:
    from transformers import BertConfig

    cfg = BertConfig(**({"hidden_size": 768, "num_hidden_layers": 12, "intermediate_size": 3072}
                        if size == "base" else {"hidden_size": 384, "num_hidden_layers": 6,
                                                "intermediate_size": 1536}))  # fmt: skip
    h, L, f = cfg.hidden_size, cfg.num_hidden_layers, cfg.intermediate_size
    non_embedding = L * (4 * h * h + 2 * h * f)
    return 6 * non_embedding + 12 * L * length * h


def labelled(contender: str, encoder: str) -> str:
    """A contender's name in the report: `mtl [multilingual_e5_small]`; MiniLM's unmarked."""
    return contender if encoder == "minilm" else f"{contender} [{encoder}]"


def main() -> None:
    if sys.argv[1:2] == ["--train-worker"]:  # ablations, then mtl.train's overrides
        train_without([a for a in sys.argv[2].split(",") if a], sys.argv[3:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--size", default="minilm", choices=["minilm", "base"])
    parser.add_argument(
        "--precision", default="bf16", choices=["bf16", "fp32"],
        help="bf16 autocast (all but the tutorial way), or fp32 throughout",
    )  # fmt: skip
    parser.add_argument(
        "--encoder", action="append",
        help="encoder config (and overrides) of the mtl contenders; repeat to compare (minilm)",
    )  # fmt: skip
    parser.add_argument("--only", help="comma-separated contenders (default: all)")
    parser.add_argument("--seed", type=int, default=0, help="split, heads, row order, task draw")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(run_baseline(args.worker, args)))
        return
    encoders = args.encoder or ["minilm"]
    if args.size == "base" and encoders != ["minilm"]:
        sys.exit("--size base trains a random BERT-base: give no --encoder with it")
    budget = args.batch * 64
    contenders = {"tutorial": None, "careful": None, "encoder alone": None, "mtl": None,
                  "mtl token budget": budget}  # fmt: skip
    contenders |= dict.fromkeys(ABLATIONS)  # not run by default: --only
    default = list(contenders)[:5] if encoders == ["minilm"] else ["mtl"]
    chosen = args.only.split(",") if args.only else default
    if unknown := [name for name in chosen if name not in contenders]:
        sys.exit(f"unknown contenders {unknown}; choose from {list(contenders)}")
    plan = [(labelled(name, e), name, e) for name in chosen
            for e in (encoders if name.startswith("mtl") else ["minilm"])]  # fmt: skip
    results: dict[str, list[dict]] = {label: [] for label, _, _ in plan}
    for r in range(args.rounds):
        for label, name, encoder in plan:
            if name.startswith("mtl"):
                result = run_mtl(args, encoder, contenders[name], [ABLATIONS.get(name, "")])
            else:
                cmd = [sys.executable, __file__, "--worker", name, *sys.argv[1:]]
                done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
                if done.returncode:
                    sys.exit(f"{name} failed:\n{done.stderr[-3000:]}")
                result = json.loads(done.stdout.strip().splitlines()[-1])
            results[label].append(result)
            rate = result["real"] / result["seconds"]
            ms = 1000 * result["seconds"] / result["steps"]
            print(f"round {r + 1}: {label:<17} {rate:>9,.0f} real tokens/s  {ms:.0f} ms/step",
                  file=sys.stderr)  # fmt: skip
    print(f"{args.steps} steps after {args.warmup} warm-up, batch {args.batch}, {args.size}, "
          f"{args.device}, {args.precision}, seed {args.seed}, "
          f"median of {args.rounds} rounds")  # fmt: skip
    rates = {}
    for name, runs in results.items():
        rates[name] = statistics.median(r["real"] / r["seconds"] for r in runs)
        efficiency = statistics.median(r["real"] / r["computed"] for r in runs)
        per100 = statistics.median(100 * r["seconds"] / r["steps"] for r in runs)
        peak = max(r["peak"] for r in runs)
        score = statistics.median(r["val_score"] for r in runs)
        faults = statistics.median(r["faults"] / r["steps"] for r in runs)
        line = (f"{name:<17} {rates[name]:>9,.0f} real tokens/s  padding efficiency "
                f"{efficiency:.2f}  peak {peak:.2f} GiB  {per100:.1f} s/100 steps  "
                f"{faults:,.0f} page faults/step  val score {score:.3f}")  # fmt: skip
        if args.device == "cuda":
            gpu = torch.cuda.get_device_name()
            peak_flops = next((v for k, v in PEAK_BF16.items() if k in gpu), None)
            length = statistics.median(r["real"] / r["rows"] for r in runs)
            if peak_flops:
                mfu = rates[name] * flops_per_token(args.size, length) / peak_flops
                line += f"  MFU {mfu:.1%}"
        if "checkpoint" in runs[0]:
            line += (f"  checkpoint {runs[0]['checkpoint'] / 1e6:,.0f} MB "
                     f"(+ {runs[0]['beside'] / 1e6:,.0f} MB beside, once per run)")  # fmt: skip
        print(line)
    if "mtl" in rates:
        for base in ("tutorial", "careful"):
            if base in rates:
                print(f"ratio vs {base}: {rates['mtl'] / rates[base]:.1f}x")
    if "mtl token budget" in rates and "careful" in rates:
        print(f"token-budget ratio vs careful: {rates['mtl token budget'] / rates['careful']:.1f}x")
    if "mtl" in rates and "encoder alone" in rates:
        print(f"mtl.train vs encoder alone: {rates['mtl'] / rates['encoder alone']:.0%}")
    first = labelled("mtl", encoders[0])
    for encoder in encoders[1:]:
        if first not in results or labelled("mtl", encoder) not in results:
            continue
        pairs = list(zip(results[first], results[labelled("mtl", encoder)], strict=True))
        for clock in ("seconds", "cpu_seconds"):  # wall-clock time, the process's CPU time
            per_token = [(b[clock] / b["real"]) / (a[clock] / a["real"]) for a, b in pairs]
            rounds = " ".join(f"{r:.2f}" for r in per_token)
            print(f"per real token ({clock}), {encoder} vs {encoders[0]}: ratio per round "
                  f"{rounds}, median {statistics.median(per_token):.2f}x")  # fmt: skip
    step = {n: [r["seconds"] / r["steps"] for r in runs] for n, runs in results.items()}
    for name, trick in ABLATIONS.items():
        if "mtl" in step and name in step:
            with_, without = statistics.median(step["mtl"]), statistics.median(step[name])
            paired = [b / a for a, b in zip(step["mtl"], step[name], strict=True)]
            rounds = " ".join(f"{r:.2f}" for r in paired)
            print(f"{trick}: {1000 * with_:.0f} ms/step with, {1000 * without:.0f} without, "
                  f"ratio {without / with_:.3f}x; per round {rounds}, "
                  f"median {statistics.median(paired):.3f}x")  # fmt: skip


if __name__ == "__main__":
    main()
