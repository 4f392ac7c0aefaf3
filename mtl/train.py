"""Train the shared encoder on several tasks at once: `python -m mtl.train [overrides]`.

One run writes into its Hydra run directory: the composed config (.hydra/), TensorBoard events
(tensorboard/), checkpoints (checkpoints/best.ckpt, last.ckpt) and metrics.json.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf

from mtl import cli, trained
from mtl.callbacks import MetricsFile
from mtl.config import ROOT, register
from mtl.data.datamodule import MultiTaskDataModule, steps_per_epoch
from mtl.data.loading import DataConfig, load_tasks
from mtl.errors import ConfigError, MtlError
from mtl.evaluate import evaluate
from mtl.feedback import TaskFeedback
from mtl.instantiate import build
from mtl.model import MultiTaskModel, OptimizerConfig, SchedulerConfig
from mtl.pretrained import EncoderConfig, build_encoder
from mtl.tasks import parse_task_specs

log = logging.getLogger("mtl.train")


def train(cfg: DictConfig) -> dict:
    """Run one training job from a composed config; returns the metrics.json content."""
    output_dir = Path(cfg.paths.output_dir)
    if not cfg.trainer.get("max_steps") or cfg.trainer.max_steps <= 0:
        raise ConfigError("trainer.max_steps: training length is set in steps; give a number > 0")
    pl.seed_everything(cfg.seed, workers=True)
    specs = parse_task_specs(cfg.task)
    encoder_cfg = _typed(cfg.encoder, EncoderConfig)
    start = trained.load(encoder_cfg.init_from) if encoder_cfg.init_from else None
    encoder, tokenizer = build_encoder(
        encoder_cfg, (start.model.encoder, start.tokenizer) if start else None
    )
    data_cfg = _typed(cfg.data, DataConfig)
    data = load_tasks(specs, tokenizer, data_cfg, cfg.seed)  # reads, fits and tokenizes
    tasks = {name: d.task for name, d in data.items()}
    sizes = {name: len(d.splits["train"]) for name, d in data.items()}
    for name, n in sizes.items():
        log.info("task %s: %d training rows, %s", name, n, tasks[name].type.value)
    task_sampler = build(
        "sampler",
        cfg.sampler,
        sizes=list(sizes.values()),
        names=list(sizes),
        total_steps=cfg.trainer.max_steps,
        steps_per_epoch=steps_per_epoch(sizes, data_cfg),
    )
    balancer = build(
        "balancer",
        cfg.balancer,
        names=list(tasks),
        loss_weights={name: t.spec.loss_weight for name, t in tasks.items()},
        seed=cfg.seed,
    )
    if balancer.gradient_level and data_cfg.tasks_per_step < 2:
        raise ConfigError(
            f"balancer {type(balancer).__name__} combines task gradients and needs several "
            "tasks per step: set data.tasks_per_step >= 2"
        )
    datamodule = MultiTaskDataModule(data, data_cfg, task_sampler, seed=cfg.seed)
    run_info = {  # what a checkpoint records to be used without this run (mtl/trained.py)
        "tokenizer": tokenizer.to_str(),
        "max_length": encoder_cfg.max_length,
        "precision": str(cfg.trainer.get("precision", "32-true")),
        "eval_batch_size": data_cfg.eval_batch_size,
        "seed": cfg.seed,
        "on_bad_row": data_cfg.on_bad_row.value,
        "data": {name: d.summary() for name, d in data.items()},
        "encoder_source": _encoder_source(encoder_cfg, start),
        "config": OmegaConf.to_yaml(cfg, resolve=True),
    }
    model = MultiTaskModel(
        encoder,
        tasks,
        _typed(cfg.optimizer, OptimizerConfig),
        _typed(cfg.scheduler, SchedulerConfig),
        balancer,
        run_info,
    )
    metrics_file = MetricsFile(output_dir / "metrics.json")
    metrics_file.extra["encoder"] = run_info["encoder_source"]
    metrics_file.extra["data"] = run_info["data"]
    callbacks = [build(f"callbacks.{k}", c) for k, c in cfg.callbacks.items()]
    callbacks += [TaskFeedback(task_sampler), metrics_file]
    loggers = [build(f"logger.{k}", c) for k, c in cfg.logger.items()]
    trainer: pl.Trainer = build("trainer", cfg.trainer, callbacks=callbacks, logger=loggers)
    for lg in loggers:
        lg.log_hyperparams(_flat_hparams(cfg))

    if cfg.resume:
        log.info("resuming from %s", cfg.resume)
    else:
        trainer.validate(model, datamodule=datamodule, verbose=False)  # the step-0 baseline
    trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.resume, weights_only=True)
    if not metrics_file.history or metrics_file.history[-1]["step"] != trainer.global_step:
        trainer.validate(model, datamodule=datamodule, verbose=False)  # metrics at the end

    checkpoint = _best_checkpoint(trainer)
    metrics_file.extra["best_checkpoint"] = checkpoint
    metrics_file.extra["skipped_rows"] = {name: d.skipped for name, d in data.items()}
    tests = {name: d.splits["test"] for name, d in data.items() if "test" in d.splits}
    if tests and checkpoint and trainer.is_global_zero:  # the best checkpoint, on held-out rows
        best = trained.load(checkpoint)
        metrics_file.extra["test"] = evaluate(best, tests, "test", trainer.strategy.root_device)
    summary = metrics_file.summary()
    if trainer.is_global_zero:
        metrics_file.write()
        print(format_summary(summary, list(tasks), output_dir, checkpoint))
    return summary


def _encoder_source(cfg: EncoderConfig, start: trained.TrainedModel | None) -> dict:
    """Where the encoder's weights came from, for metrics.json and model cards."""
    if start is not None:
        return {"init_from": cfg.init_from, "checkpoint": str(start.source),
                "started_from": start.info.get("encoder_source")}  # fmt: skip
    return {"pretrained": cfg.pretrained} if cfg.pretrained else {"pretrained": None}


def _typed(node: DictConfig, cls: type):
    """A config group as its dataclass (the schema already validated keys and types)."""
    return cls(**{k: v for k, v in OmegaConf.to_container(node, resolve=True).items()
                  if k in cls.__dataclass_fields__})  # fmt: skip


def _flat_hparams(cfg: DictConfig) -> dict:
    """Scalar settings for TensorBoard's HPARAMS tab: task list, encoder, sampler, optimizer."""
    flat = {"tasks": ",".join(cfg.task), "seed": cfg.seed}
    for group in ("encoder", "sampler", "balancer", "optimizer", "scheduler", "data"):
        container = OmegaConf.to_container(cfg[group], resolve=True, enum_to_str=True)
        for key, value in container.items():
            if isinstance(value, str | int | float | bool) or value is None:
                flat[f"{group}/{key}"] = str(value) if value is None else value
    flat["trainer/max_steps"] = cfg.trainer.get("max_steps", -1)
    return flat


def _best_checkpoint(trainer: pl.Trainer) -> str | None:
    callback = trainer.checkpoint_callback
    return getattr(callback, "best_model_path", None) or None


def format_summary(
    summary: dict, tasks: list[str], output_dir: Path, checkpoint: str | None
) -> str:
    """A per-task table of validation metrics at the start, at the best step and at the end,
    and of the best checkpoint's test metrics where tasks have a test split."""
    parts = ["start", "best", "final"]
    columns = [(part, summary[part], "val/") for part in parts]
    if summary.get("test"):
        columns.append(("test", summary["test"], "test/"))
    rows = [f"{'task/metric':<34}" + "".join(f"{name:>10}" for name, _, _ in columns)]
    keys = [k for k in summary["final"] if k.startswith("val/") and k != "val/score"]
    keys.sort(key=lambda k: (tasks.index(k.split("/")[1]), k))
    for key in keys + ["val/score"]:
        name = "score (mean task score)" if key == "val/score" else key[4:]
        cells = [entry.get(prefix + key[4:], float("nan")) for _, entry, prefix in columns]
        rows.append(f"{name:<34}" + "".join(f"{c:>10.4f}" for c in cells))
    rows += [
        f"best step: {summary['best_step']}",
        f"run directory:   {output_dir}",
        f"TensorBoard:     tensorboard --logdir {output_dir}",
        f"best checkpoint: {checkpoint or '(none saved)'}",
    ]
    return "\n".join(rows)


@hydra.main(version_base="1.3", config_path=str(ROOT / "conf"), config_name="train")
def _hydra_main(cfg: DictConfig) -> float:
    cli.quiet_known_warnings()
    try:
        return train(cfg)["best"]["val/score"]
    except MtlError as e:
        sys.exit(f"error: {e}")


def main() -> float:
    """Entry point (`python -m mtl.train`, `mtl-train`); returns val/score at the best step
    (for sweepers that optimize)."""
    register()
    return _hydra_main()


if __name__ == "__main__":
    main()
