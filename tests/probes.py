"""Test-only callbacks, used through the real interface with this folder on PYTHONPATH:

+callbacks.trace._target_=probes.BatchTrace +callbacks.trace.path=DIR
+callbacks.initial._target_=probes.InitialWeights +callbacks.initial.path=FILE
"""

import io
import json
import os
import signal as signal_module
import time
import traceback
from pathlib import Path

import pytorch_lightning as pl
import torch
from memory_probe import freed_block_stays_mapped
from safetensors.torch import save_file


class BatchTrace(pl.Callback):
    """Records which task and rows each rank trained at each step."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        record = {
            "step": batch["step"],
            "global_step": trainer.global_step,
            "parts": [
                {"task": p["task"], "rows": p["rows"].tolist(), "width": p["input_ids"].shape[1]}
                for p in batch["parts"]
            ],
        }
        with open(self.path / f"rank{trainer.global_rank}.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")


def read_trace(path: Path, rank: int = 0) -> list[dict]:
    lines = (Path(path) / f"rank{rank}.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


class InitialWeights(pl.Callback):
    """Saves the model's weights as training starts (step 0), as safetensors."""

    def __init__(self, path: str) -> None:
        self.path = path

    def on_train_start(self, trainer, pl_module) -> None:
        state = {k: v.detach().clone().contiguous() for k, v in pl_module.state_dict().items()}
        save_file(state, self.path)


class SignalAt(pl.Callback):
    """Sends this process `signal` (KILL, TERM, INT) once `step` optimizer steps are done."""

    def __init__(self, step: int, signal: str = "KILL") -> None:
        self.step, self.signal = step, getattr(signal_module, f"SIG{signal}")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.signal)


class KillDuringCheckpointWrite(pl.Callback):
    """SIGKILLs this process halfway through writing its `write`-th checkpoint file (counting
    from 1): half of the bytes are on disk when it dies."""

    def __init__(self, write: int) -> None:
        self.write = write

    def setup(self, trainer, pl_module, stage) -> None:
        real_save, count = torch.save, [0]

        def dying_save(obj, f, *args, **kwargs):
            if not isinstance(f, io.BufferedWriter):  # an in-memory copy, not a file write
                return real_save(obj, f, *args, **kwargs)
            count[0] += 1
            if count[0] < self.write:
                return real_save(obj, f, *args, **kwargs)
            buffer = io.BytesIO()
            real_save(obj, buffer)
            f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
            f.flush()
            os.fsync(f.fileno())
            os.kill(os.getpid(), signal_module.SIGKILL)

        torch.save = dying_save


class PoisonWeights(pl.Callback):
    """Fills the encoder's weights with NaN once `step` optimizer steps are done (a diverged
    run, on demand)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            with torch.no_grad():
                for p in pl_module.encoder.parameters():
                    p.fill_(float("nan"))


class Rendezvous(pl.Callback):
    """Jobs that run at once meet: each job marks its start (in `folder`, by process id) when
    its callbacks are built, then waits before training until `parties` jobs have marked
    theirs (or `timeout` seconds pass: jobs run one after another never meet), and appends
    its process id and whether it met the others to `folder`/met.jsonl."""

    def __init__(self, folder: str, parties: int = 2, timeout: float = 300.0) -> None:
        self.folder, self.parties, self.timeout = Path(folder), parties, timeout
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / f"{os.getpid()}.started").touch()

    def on_fit_start(self, trainer, pl_module) -> None:
        deadline = time.time() + self.timeout
        while len(list(self.folder.glob("*.started"))) < self.parties and time.time() < deadline:
            time.sleep(0.2)
        met = len(list(self.folder.glob("*.started"))) >= self.parties
        with open(self.folder / "met.jsonl", "a") as f:
            f.write(json.dumps({"pid": os.getpid(), "met": met}) + "\n")


class FreedMemoryReuse(pl.Callback):
    """Writes `freed_block_stays_mapped()` of the training process, as training starts."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def on_train_start(self, trainer, pl_module) -> None:
        self.path.write_text(json.dumps(freed_block_stays_mapped()))


class HostReads(pl.Callback):
    """Counts, per training step, the tensor -> Python reads (`item`, `float`, `int`, `bool`,
    `tolist`): on a GPU each is a host-device sync. A step counts from its batch's start to
    the next batch's start (the feedback callbacks included); JSON {step: [call sites]}."""

    READS = ("item", "__float__", "__int__", "__bool__", "tolist")

    def __init__(self, path: str) -> None:
        self.path, self.reads, self.step = Path(path), {}, None
        self.originals = {name: getattr(torch.Tensor, name) for name in self.READS}

    def _counting(self, name: str):
        original, reads = self.originals[name], self.reads

        def read(tensor, *args, **kwargs):
            frames = [f for f in traceback.extract_stack()[:-1] if "site-packages" not in f.filename
                      or "pytorch_lightning" in f.filename]  # fmt: skip
            where = "/".join(frames[-1].filename.split("/")[-3:])  # e.g. mtl/data/cache.py
            site = f"{where}:{frames[-1].lineno} {name}"
            reads.setdefault(self.step, []).append(site)
            return original(tensor, *args, **kwargs)

        return read

    def _stop(self) -> None:
        for name, original in self.originals.items():
            setattr(torch.Tensor, name, original)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._stop()
        self.step = trainer.global_step
        for name in self.READS:
            setattr(torch.Tensor, name, self._counting(name))

    def on_validation_start(self, trainer, pl_module) -> None:
        self._stop()

    def on_train_end(self, trainer, pl_module) -> None:
        self._stop()
        self.path.write_text(json.dumps({str(k): v for k, v in self.reads.items()}))
