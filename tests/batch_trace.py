"""A test-only callback: records which task and rows each rank trained at each step.

Used through the real interface: `+callbacks.trace._target_=batch_trace.BatchTrace
+callbacks.trace.path=DIR`, with this folder on PYTHONPATH.
"""

import json
from pathlib import Path

import pytorch_lightning as pl


class BatchTrace(pl.Callback):
    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        record = {
            "step": batch["step"],
            "parts": [{"task": p["task"], "rows": p["rows"].tolist()} for p in batch["parts"]],
        }
        with open(self.path / f"rank{trainer.global_rank}.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")


def read_trace(path: Path, rank: int = 0) -> list[dict]:
    lines = (Path(path) / f"rank{rank}.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]
