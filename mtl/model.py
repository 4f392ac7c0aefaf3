"""The LightningModule: one shared encoder, one head per task, balanced task losses per step.

A training batch holds one task's batch (the default) or k tasks' batches (a joint step); the
balancer turns their losses into gradients (mtl/balancing/). Optimization is manual so that
balancing and clipping with a fused optimizer happen in one readable place. The model knows
its encoder, heads, losses, balancer and optimizer; which task comes next is the training
loop's business (mtl/feedback.py), fed by what `training_step` returns.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

import pytorch_lightning as pl
import torch
from torch import Tensor, nn
from torch.optim.lr_scheduler import LambdaLR

from mtl import frozen
from mtl.balancing import Backprop, LossBalancer, StaticBalancer
from mtl.encoder import BertOutput, Encoder
from mtl.errors import ConfigError, require
from mtl.tasks import Task, spec_dict


@dataclass
class OptimizerConfig:
    """AdamW (Loshchilov & Hutter 2019) with weight decay off for biases and LayerNorm."""

    lr: float = 1e-4  # encoder learning rate
    head_lr: float = 1e-3  # heads (and learned loss weights) start from scratch: larger steps
    weight_decay: float = 0.01
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    fused: bool | None = None  # None: fused kernel wherever the device supports it
    max_grad_norm: float | None = 1.0  # clip the global gradient norm; None: no clipping
    accumulate: int = 1  # task batches summed into one optimizer step
    layer_decay: float | None = None  # layer-wise lr decay: lr·decay^(depth from the top layer)

    def check(self) -> None:
        """The ranges of these settings; errors name the `optimizer.` key."""
        for key in ("lr", "head_lr", "eps"):
            require(f"optimizer.{key}", getattr(self, key), getattr(self, key) > 0, "> 0")
        decay, norm, betas = self.weight_decay, self.max_grad_norm, self.betas
        require("optimizer.weight_decay", decay, decay >= 0, ">= 0")
        ok = len(betas) == 2 and all(0 <= b < 1 for b in betas)
        require("optimizer.betas", betas, ok, "two values in [0, 1)")
        require("optimizer.max_grad_norm", norm, norm is None or norm > 0, "> 0 or null")
        layer = self.layer_decay
        require("optimizer.layer_decay", layer, layer is None or 0 < layer <= 1,
                "in (0, 1] or null")  # fmt: skip
        require("optimizer.accumulate", self.accumulate, self.accumulate >= 1, ">= 1")


class Decay(str, Enum):
    linear = "linear"  # to zero at the last step
    constant = "constant"  # stay at the peak rate


@dataclass
class SchedulerConfig:
    """Linear warmup to the peak rate over `warmup` of the steps, then `decay` to zero or flat."""

    warmup: float = 0.1  # fraction of max_steps
    decay: Decay = Decay.linear

    def check(self) -> None:
        """The range of the warmup; errors name the `scheduler.` key."""
        warmup = self.warmup
        require("scheduler.warmup", warmup, 0 <= warmup <= 1, "a fraction of the steps in [0, 1]")


def lr_lambda(total_steps: int, cfg: SchedulerConfig):
    """Multiplier at step s: (s + 1) / w during warmup (w = warmup·total), then linear to 0."""
    warmup = max(1, int(cfg.warmup * total_steps))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if cfg.decay == Decay.constant:
            return 1.0
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return factor


def is_log_step(step: int, every: int) -> bool:
    """Training scalars are written at step 0 and then every `every` steps."""
    return step == 0 or (step + 1) % max(1, every) == 0


CHECKPOINT_FORMAT = 1  # of the "mtl_model" entry; bump when mtl/trained.py must read it otherwise


class MultiTaskModel(pl.LightningModule):
    """The shared encoder and one head per fitted task; `training_step` returns the step's
    loss and, under "losses", each trained task's loss (averaged over ranks).

    Built for inference, only `encoder` and `tasks` are needed. `run_info` is what else a
    checkpoint records so that it can be used without its run (see mtl/trained.py): the
    tokenizer, precision, evaluation batching and where the data came from.
    """

    def __init__(
        self,
        encoder: Encoder,
        tasks: dict[str, Task],
        optimizer: OptimizerConfig | None = None,
        scheduler: SchedulerConfig | None = None,
        balancer: LossBalancer | None = None,
        run_info: dict | None = None,
    ) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.encoder = encoder
        self.tasks = tasks
        self.optimizer_cfg = optimizer or OptimizerConfig()
        self.scheduler_cfg = scheduler or SchedulerConfig()
        self.balancer = balancer or StaticBalancer(list(tasks), {})
        self.run_info = run_info or {}
        self.heads = nn.ModuleDict({name: t.head(encoder) for name, t in tasks.items()})
        self.val_metrics = self.new_metrics()
        self.frozen_heads: set[str] = set()  # heads that no longer learn (a stopped task's)
        self._window: dict[str, list[Tensor]] = {}  # training losses since the last log write
        self._grad_norm: Tensor | None = None
        self.train_summary: dict[str, str] = {}  # for the progress bar, as of the last log
        self._window_batches = 0  # batches accumulated toward the next optimizer step
        self._window_tasks: set[str] = set()
        self.frozen_keys: list[str] = []  # encoder weights no step of this run changes

    def encode(self, part: dict) -> BertOutput:
        """input_ids, attention_mask, token_type_ids (B, T) -> the token states (B, T, C) and
        sentence vectors (B, C), or the batch's cached sentence vectors alone (feature
        extraction with a frozen encoder)."""
        if "features" in part:
            return BertOutput(hidden=None, pooled=part["features"])  # type: ignore[arg-type]
        return self.encoder(part["input_ids"], part["attention_mask"], part["token_type_ids"])

    def forward(self, part: dict) -> Tensor:
        """One task's batch -> its head's output ((B, outputs), or its task's token shape)."""
        return self.heads[part["task"]](self.encode(part), self.encoder, part)

    def task_losses(self, parts: list[dict]) -> dict[str, Tensor]:
        return {p["task"]: self.tasks[p["task"]].loss(self(p), p["labels"]) for p in parts}

    # ---- training -------------------------------------------------------------------------

    def on_fit_start(self) -> None:
        """Refuse set-ups this module cannot train correctly, before the first step."""
        if getattr(self.trainer.precision_plugin, "scaler", None) is not None:
            raise ConfigError(
                "trainer.precision: fp16 loss scaling is not supported (gradients are clipped "
                "and combined by mtl itself); use bf16-mixed or 32-true"
            )

    def on_train_start(self) -> None:
        """The encoder weights frozen now stay frozen for the whole run (schedules such as
        gradual unfreezing start after this and unfreeze only what the configuration trains):
        checkpoints store them once (mtl/frozen.py)."""
        frozen = [n for n, p in self.encoder.named_parameters() if not p.requires_grad]
        self.frozen_keys = [f"encoder.{name}" for name in frozen]

    def training_step(self, batch: dict, batch_idx: int) -> dict:
        """One task batch (or a joint step's k batches); every `optimizer.accumulate` of them
        make one optimizer step, whose update follows their summed (balanced) losses."""
        k = self.optimizer_cfg.accumulate
        batch_step = self.global_step * k + self._window_batches  # the sampler's step index
        profile = self.trainer.profiler.profile  # sections of debug=profile's table
        with profile("mtl: forward"):
            losses = self.task_losses(batch["parts"])
        backprop = self._backprop(losses)
        with profile("mtl: backward"):
            total = self.balancer.backward(losses, batch_step, backprop)
        self._window_batches += 1
        self._window_tasks.update(losses)
        values = self._record(losses, batch_step)
        if self._window_batches == k:
            with profile("mtl: optimizer step"):
                self._optimizer_step(backprop)
        return {"loss": total, "losses": values}

    def _backprop(self, losses: dict[str, Tensor]) -> Backprop:
        """What the balancer needs to turn this batch's losses into gradients: the encoder
        parameters that train now (none while it is frozen: feature extraction, a probe's
        first steps) are shared; each batch task's head is its own."""
        return Backprop(
            backward=lambda loss: self.manual_backward(loss + self._idle_term(losses)),
            shared=[p for p in self.encoder.parameters() if p.requires_grad],
            own={n: [p for p in self.heads[n].parameters() if p.requires_grad] for n in losses},
            rank_mean=self._rank_mean,
            distributed=self.trainer.world_size > 1,
        )

    def _idle_term(self, losses: dict[str, Tensor]) -> Tensor:
        """Zero times every head not in this batch: under DDP every parameter must take part in
        each backward pass; the zero gradients are dropped again before the optimizer step."""
        idle = [p for n, h in self.heads.items() if n not in losses for p in h.parameters()]
        return 0.0 * sum(p.sum() for p in idle)

    def _optimizer_step(self, backprop: Backprop) -> None:
        """The balancer's last word on the window's gradients, then clip, step (heads untrained
        in the window, or frozen, skipped as untouched), and start the next window. The
        encoder's rate is scaled by the window's tasks' `encoder_lr_scale` (their mean) for
        this step."""
        step, optimizer = self.global_step, self.optimizers()
        self.balancer.before_optimizer_step(backprop, step)
        for name, head in self.heads.items():
            if name not in self._window_tasks or name in self.frozen_heads:
                for p in head.parameters():
                    p.grad = None
        scale = sum(self.tasks[n].spec.encoder_lr_scale for n in self._window_tasks)
        scale /= len(self._window_tasks)
        encoder_groups = [g for g in optimizer.param_groups if g["name"].startswith("encoder")]
        for group in encoder_groups:
            group["lr"] *= scale
        self._clip_gradients()
        optimizer.step()
        if is_log_step(step, self.trainer.log_every_n_steps):
            with self.trainer.profiler.profile("mtl: logging"):
                self._log_training(step)  # with the learning rates this step used
        for group in encoder_groups:
            group["lr"] /= scale
        optimizer.zero_grad(set_to_none=True)
        self.lr_schedulers().step()
        self._window_batches, self._window_tasks = 0, set()

    def _clip_gradients(self) -> None:
        """Clipping here, not through the trainer: Lightning refuses to clip for fused
        optimizers, although with bf16 (no loss scaling) the gradients are already unscaled."""
        if self.optimizer_cfg.max_grad_norm:
            norm = nn.utils.clip_grad_norm_(self.parameters(), self.optimizer_cfg.max_grad_norm)
            self._grad_norm = norm.detach()  # read when logged

    def _record(self, losses: dict[str, Tensor], batch_step: int) -> dict[str, Tensor]:
        """The batch's losses averaged over ranks (so every rank makes the same choices): told
        to the balancer, kept for the next training log, and returned. They stay on the device
        (no host-device sync in the step): who needs numbers reads them at its own interval."""
        values = {n: self._rank_mean(loss.detach()) for n, loss in losses.items()}
        self.balancer.end_step(values, batch_step)
        for name, value in values.items():
            self._window.setdefault(name, []).append(value)
        return values

    def _rank_mean(self, value: Tensor) -> Tensor:
        if self.trainer.world_size > 1:
            return self.trainer.strategy.reduce(value, reduce_op="mean")
        return value

    def _log_training(self, step: int) -> None:
        """Every trainer.log_every_n_steps steps: each task's mean loss over its steps since the
        last write, the learning rates and the balancer's weights."""
        means = {n: float(torch.stack(v).mean()) for n, v in self._window.items()}  # read here
        self._window = {}
        self.train_summary = {"train/loss": f"{sum(means.values()) / len(means):.3g}"}
        metrics = {f"train/{n}/loss": value for n, value in means.items()}
        for group in self.optimizers().param_groups:
            if not group["name"].endswith("_no_decay"):
                metrics[f"lr/{group['name']}"] = group["lr"]
        metrics.update({f"balancer/w/{n}": w for n, w in self.balancer.weights().items()})
        if self._grad_norm is not None:
            metrics["train/grad_norm"] = float(self._grad_norm)
        for logger in self.loggers:
            logger.log_metrics(metrics, step=step)

    # ---- validation -----------------------------------------------------------------------

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        for part in batch["parts"]:
            self.update_metrics(self.val_metrics, part)

    def on_validation_epoch_end(self) -> None:
        results = self.compute_metrics(self.val_metrics, "val")
        self.log_dict(results, logger=False)  # for checkpointing and early stopping
        for logger in self.loggers:  # at the number of optimizer steps taken (0 = before any)
            logger.log_metrics(results, step=self.global_step)

    def new_metrics(self) -> nn.ModuleDict:
        """Fresh metric states, one collection per task."""
        return nn.ModuleDict({name: t.metrics() for name, t in self.tasks.items()})

    def update_metrics(self, metrics: nn.ModuleDict, part: dict) -> None:
        """Add one task's batch to its metrics: predictions in label space vs labels."""
        name = part["task"]
        self.tasks[name].update_metrics(metrics[name], self(part), part["labels"])

    def compute_metrics(self, metrics: nn.ModuleDict, prefix: str) -> dict[str, float]:
        """<prefix>/<task>/<metric> and <prefix>/<task>/score for each task with data, and
        <prefix>/score = Σ w·score / Σ w with w a task's `score_weight` (tasks with weight 0
        are auxiliary: reported, but not deciding); the states are reset."""
        results, weighted, weights = {}, 0.0, 0.0
        for name, task in self.tasks.items():
            if not any(m.update_called for m in metrics[name].values()):
                continue  # no rows of this task in this evaluation
            values = {k: float(v) for k, v in metrics[name].compute().items()}
            metrics[name].reset()
            values["score"] = task.score(values)
            results.update({f"{prefix}/{name}/{k}": v for k, v in values.items()})
            weighted += task.score_weight * values["score"]
            weights += task.score_weight
        if weights > 0:
            results[f"{prefix}/score"] = weighted / weights
        return results

    # ---- checkpoints: random state for exact resume ---------------------------------------

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # what the weights mean: the encoder's shape, each task's spec and fitted state (class
        # order, regression mean and sd), the step and its validation metrics, the run's info
        trainer = self._trainer
        metrics = trainer.callback_metrics if trainer is not None else {}
        checkpoint["mtl_model"] = {
            "format": CHECKPOINT_FORMAT,
            "encoder": self.encoder.cfg.to_hf(),
            "tasks": {
                name: {"spec": spec_dict(task.spec), "state": task.state()}
                for name, task in self.tasks.items()
            },
            "step": self.global_step,
            "metrics": {k: float(v) for k, v in metrics.items() if k.startswith("val/")},
            **self.run_info,
        }
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        checkpoint["mtl_rng"] = rng
        checkpoint[frozen.KEYS] = self.frozen_keys  # stored once, beside it (mtl/frozen.py)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        for name, saved in checkpoint.get("mtl_model", {}).get("tasks", {}).items():
            if name in self.tasks and saved["state"] != self.tasks[name].state():
                raise ConfigError(
                    f"task.{name}: the checkpoint was trained with {saved['state']}, but the data "
                    f"now gives {self.tasks[name].state()} (changed files or train_fraction?)"
                )
        rng = checkpoint.get("mtl_rng")
        if rng:  # dropout continues exactly where the stopped run left off
            torch.set_rng_state(rng["torch"])
            if "cuda" in rng and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(rng["cuda"])

    # ---- optimizer ------------------------------------------------------------------------

    def parameter_parts(self) -> list[tuple[str, list[nn.Parameter], float]]:
        """(name, parameters, learning rate): the encoder (one part, or with
        `optimizer.layer_decay` one per layer, lr·decay^(depth from the top layer); Clark et
        al. 2020, ELECTRA), each task's head (head_lr · the task's lr_scale), and the
        balancer's learned weights."""
        cfg = self.optimizer_cfg
        heads = [
            (f"heads/{name}", list(head.parameters()), cfg.head_lr * self.tasks[name].spec.lr_scale)
            for name, head in self.heads.items()
        ]
        heads.append(("balancer", list(self.balancer.parameters()), cfg.head_lr))
        if not cfg.layer_decay:
            return [("encoder", list(self.encoder.parameters()), cfg.lr), *heads]
        groups = self.encoder.layer_groups()  # [embeddings, layer 0, ..., layer L-1]
        names = ["encoder/embeddings"] + [f"encoder/layer{i}" for i in range(len(groups) - 1)]
        depth = len(groups) - 1
        parts = [
            (n, g, cfg.lr * cfg.layer_decay ** (depth - i))
            for i, (n, g) in enumerate(zip(names, groups, strict=True))
        ]
        return [*parts, *heads]

    def configure_optimizers(self):
        cfg = self.optimizer_cfg
        groups = []
        for part, params, lr in self.parameter_parts():
            decay, no_decay = [], []
            for p in params:
                if p.requires_grad:
                    (no_decay if p.ndim < 2 else decay).append(p)  # biases, LayerNorm, σ
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
        return {"optimizer": optimizer, "lr_scheduler": schedule}  # stepped in training_step
