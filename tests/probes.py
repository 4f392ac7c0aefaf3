"""Test-only callbacks, used through the real interface with this folder on PYTHONPATH:

+callbacks.trace._target_=probes.BatchTrace +callbacks.trace.path=DIR
+callbacks.initial._target_=probes.InitialWeights +callbacks.initial.path=FILE
"""

import json
from pathlib import Path

import pytorch_lightning as pl
from safetensors.torch import save_file


class BatchTrace(pl.Callback):
    """Records which task and rows each rank trained at each step."""

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


class InitialWeights(pl.Callback):
    """Saves the model's weights as training starts (step 0), as safetensors."""

    def __init__(self, path: str) -> None:
        self.path = path

    def on_train_start(self, trainer, pl_module) -> None:
        state = {k: v.detach().clone().contiguous() for k, v in pl_module.state_dict().items()}
        save_file(state, self.path)
