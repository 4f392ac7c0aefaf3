"""The LightningModule: one shared encoder, one head per task, the task's loss per batch."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytorch_lightning as pl
import torch
from torch import Tensor, nn
from torch.optim.lr_scheduler import LambdaLR

from mtl.encoder import Bert
from mtl.errors import ConfigError
from mtl.heads import MLPHead
from mtl.tasks import Task


@dataclass
class OptimizerConfig:
    """AdamW (Loshchilov & Hutter 2019) with weight decay off for biases and LayerNorm."""

    lr: float = 5e-5  # encoder learning rate
    head_lr: float = 1e-3  # heads start from scratch and take a larger step
    weight_decay: float = 0.01
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    fused: bool | None = None  # None: fused kernel wherever the device supports it
    max_grad_norm: float | None = 1.0  # clip the global gradient norm; None: no clipping


@dataclass
class SchedulerConfig:
    """Linear warmup to the peak rate over `warmup` of the steps, then `decay` to zero or flat."""

    warmup: float = 0.1  # fraction of max_steps
    decay: str = "linear"  # linear | constant


def lr_lambda(total_steps: int, cfg: SchedulerConfig):
    """Multiplier at step s: s / w during warmup (w = warmup·total), then linear decay to 0."""
    if cfg.decay not in ("linear", "constant"):
        raise ConfigError(f"scheduler.decay: {cfg.decay!r} is not 'linear' or 'constant'")
    warmup = max(1, int(cfg.warmup * total_steps))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if cfg.decay == "constant":
            return 1.0
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return factor


class MultiTaskModule(pl.LightningModule):
    def __init__(
        self,
        encoder: Bert,
        tasks: dict[str, Task],
        optimizer: OptimizerConfig,
        scheduler: SchedulerConfig,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.tasks = tasks
        self.optimizer_cfg, self.scheduler_cfg = optimizer, scheduler
        C = encoder.hidden_size
        self.heads = nn.ModuleDict(
            {
                name: MLPHead(C, t.num_outputs, t.spec.head.hidden, t.spec.head.dropout)
                for name, t in tasks.items()
            }
        )
        self.val_metrics = nn.ModuleDict({name: t.metrics() for name, t in tasks.items()})

    def forward(self, batch: dict) -> Tensor:
        out = self.encoder(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        return self.heads[batch["task"]](out.pooled)  # (B, outputs)

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        name = batch["task"]
        task = self.tasks[name]
        loss = task.loss(self(batch), batch["labels"])
        B = len(batch["labels"])
        self.log(f"train/{name}/loss", loss, batch_size=B)
        self.log("train/loss", loss, batch_size=B, prog_bar=True)
        every = self.trainer.log_every_n_steps
        if every and self.global_step % every == 0:
            self._log_schedules()
        return task.spec.loss_weight * loss

    def _log_schedules(self) -> None:
        """Learning rates (lr/encoder, lr/heads) and the task sampler's probabilities."""
        for group in self.optimizers().param_groups:
            if not group["name"].endswith("_no_decay"):
                self.log(f"lr/{group['name']}", group["lr"])
        sampler = getattr(self.trainer.datamodule, "task_sampler", None)
        if sampler is not None:
            for name, p in zip(self.tasks, sampler.probabilities(self.global_step), strict=True):
                self.log(f"sampler/p/{name}", p)

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        name = batch["task"]
        prediction = self.tasks[name].predict(self(batch))
        self.val_metrics[name].update(prediction, batch["labels"])

    def on_validation_epoch_end(self) -> None:
        results = self.compute_val_metrics()
        self.log_dict(results, logger=False)  # for checkpointing and early stopping
        for logger in self.loggers:  # at the number of optimizer steps taken (0 = before any)
            logger.log_metrics(results, step=self.global_step)

    def compute_val_metrics(self) -> dict[str, float]:
        """val/<task>/<metric> for each task and val/score = mean of the tasks' scores."""
        results, scores = {}, []
        for name, task in self.tasks.items():
            values = {k: float(v) for k, v in self.val_metrics[name].compute().items()}
            self.val_metrics[name].reset()
            results.update({f"val/{name}/{k}": v for k, v in values.items()})
            scores.append(task.score(values))
        results["val/score"] = sum(scores) / len(scores)
        return results

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Gradient clipping here, not through the trainer: Lightning refuses to clip for fused
        optimizers, although with bf16 (no loss scaling) the gradients are already unscaled."""
        if self.optimizer_cfg.max_grad_norm:
            norm = nn.utils.clip_grad_norm_(self.parameters(), self.optimizer_cfg.max_grad_norm)
            self.log("train/grad_norm", norm)

    def configure_optimizers(self):
        cfg = self.optimizer_cfg
        groups = []
        parts = (("encoder", self.encoder, cfg.lr), ("heads", self.heads, cfg.head_lr))
        for part, module, lr in parts:
            decay, no_decay = [], []
            for p in module.parameters():
                if p.requires_grad:
                    (no_decay if p.ndim < 2 else decay).append(p)  # biases and LayerNorm
            groups += [
                {"name": part, "params": decay, "lr": lr, "weight_decay": cfg.weight_decay},
                {"name": f"{part}_no_decay", "params": no_decay, "lr": lr, "weight_decay": 0.0},
            ]
        fused = cfg.fused if cfg.fused is not None else self.device.type in ("cpu", "cuda")
        optimizer = torch.optim.AdamW(
            [g for g in groups if g["params"]], betas=tuple(cfg.betas), eps=cfg.eps, fused=fused
        )
        total = self.trainer.max_steps
        if total is None or total < 0:
            total = self.trainer.estimated_stepping_batches
        schedule = LambdaLR(optimizer, lr_lambda(int(total), self.scheduler_cfg))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
