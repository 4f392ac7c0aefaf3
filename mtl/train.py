"""Train the shared encoder on several tasks at once: `python -m mtl.train [overrides]`.

One run writes into its Hydra run directory: the composed config (.hydra/), TensorBoard events
(tensorboard/), checkpoints (checkpoints/best.ckpt, last.ckpt) and metrics.json.
"""

from __future__ import annotations

import logging
import signal
import sys
import time
from pathlib import Path

import hydra
import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf

from mtl import cli, trained
from mtl.callbacks import MetricsFile
from mtl.checkpointing import AtomicCheckpointIO, GracefulStop, RunCheckpoints
from mtl.config import ROOT, DataSettings, register
from mtl.cv import cross_validate
from mtl.data.datamodule import MultiTaskDataModule, steps_per_epoch
from mtl.data.datasets import with_dataset
from mtl.data.loading import load_tasks
from mtl.errors import ConfigError, MtlError
from mtl.evaluate import evaluate
from mtl.feedback import TaskFeedback, TaskStopping
from mtl.host_memory import keep_freed_memory
from mtl.instantiate import build
from mtl.model import MultiTaskModel, OptimizerConfig, SchedulerConfig
from mtl.pretrained import EncoderConfig, build_encoder
from mtl.resume import resume_arguments, resume_checkpoint
from mtl.tasks import TaskSpec, parse_task_specs
from mtl.transfer import EncoderUnfreezing, TransferConfig, cache_features
from mtl.validation import check_config, typed

log = logging.getLogger("mtl.train")


class RunStoppedError(Exception):
    """Training stopped early on a signal; the run can be resumed."""

    def __init__(self, signum: int, output_dir: Path, step: int) -> None:
        self.signum = signum
        name = signal.Signals(signum).name
        super().__init__(
            f"stopped by {name} at step {step}; checkpoints/last.ckpt holds this step. "
            f"Resume with: python -m mtl.train resume={output_dir}"
        )


def check_run(cfg: DictConfig) -> tuple[dict[str, TaskSpec], Path | None]:
    """What is checked before anything is built: the config (unknown keys, ranges, _target_),
    the task specs (with registered data sets' files filled in), and the checkpoint to
    resume from."""
    check_config(cfg)
    root = Path(cfg.data.root)
    specs = {name: with_dataset(name, spec, root) if spec.dataset else spec
             for name, spec in parse_task_specs(cfg.task).items()}  # fmt: skip
    return specs, resume_checkpoint(cfg.resume, list(specs))


def train(cfg: DictConfig) -> dict:
    """Run one training job from a composed config; returns the metrics.json content."""
    output_dir = Path(cfg.paths.output_dir)
    specs, resume = check_run(cfg)
    pl.seed_everything(cfg.seed, workers=True)
    encoder_cfg = typed(cfg, "encoder", EncoderConfig)
    start = trained.load(encoder_cfg.init_from) if encoder_cfg.init_from else None
    encoder, tokenizer = build_encoder(
        encoder_cfg, (start.model.encoder, start.tokenizer) if start else None
    )
    for name, spec in specs.items():
        if (spec.max_length or 0) > encoder.cfg.max_position:
            raise ConfigError(
                f"task.{name}.max_length={spec.max_length} exceeds the encoder's "
                f"{encoder.cfg.max_position} positions"
            )
    data_cfg = typed(cfg, "data", DataSettings)
    data = load_tasks(specs, tokenizer, data_cfg, cfg.seed)  # reads, fits and tokenizes
    tasks = {name: d.task for name, d in data.items()}
    sizes = {name: len(d.splits["train"]) for name, d in data.items()}
    for name, n in sizes.items():
        log.info("task %s: %d training rows, %s", name, n, tasks[name].type.value)
    batch_sizes = {name: t.spec.batch_size or data_cfg.batch_size for name, t in tasks.items()}
    task_sampler = build(
        "sampler",
        cfg.sampler,
        sizes=list(sizes.values()),
        names=list(sizes),
        total_steps=cfg.trainer.max_steps,
        steps_per_epoch=steps_per_epoch(
            {name: d.splits["train"].lengths for name, d in data.items()},
            batch_sizes,
            data_cfg,
            cfg.seed,
        ),  # fmt: skip
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
        typed(cfg, "optimizer", OptimizerConfig),
        typed(cfg, "scheduler", SchedulerConfig),
        balancer,
        run_info,
    )
    if encoder_cfg.compile:  # in place: parameter names, checkpoints and exports unchanged
        model.encoder.compile(mode=encoder_cfg.compile)
    metrics_file = MetricsFile(output_dir / "metrics.json")
    metrics_file.extra["encoder"] = run_info["encoder_source"]
    metrics_file.extra["data"] = run_info["data"]
    stop = GracefulStop()
    callbacks = [build(f"callbacks.{k}", c) for k, c in cfg.callbacks.items() if c is not None]
    callbacks += [TaskFeedback(task_sampler), metrics_file, stop]
    transfer = typed(cfg, "transfer", TransferConfig)
    if transfer.probe_steps or transfer.unfreeze_every:
        callbacks.append(EncoderUnfreezing(transfer.probe_steps, transfer.unfreeze_every))
    patience = {name: spec.patience for name, spec in specs.items() if spec.patience}
    stopping = None
    if patience:
        counted = [name for name, spec in specs.items() if spec.score_weight > 0]
        delay = 2 * data_cfg.num_workers + 1  # batches the loader may have drawn already
        stopping = TaskStopping(task_sampler, patience, counted, delay, transfer.probe_steps)
        callbacks.append(stopping)
    loggers = [build(f"logger.{k}", c) for k, c in cfg.logger.items()]
    trainer: pl.Trainer = build(
        "trainer", cfg.trainer, callbacks=callbacks, logger=loggers, plugins=[AtomicCheckpointIO()]
    )
    for key in ("probe_steps", "unfreeze_every"):
        if getattr(transfer, key) and trainer.world_size > 1:
            raise ConfigError(f"transfer.{key}: a schedule of frozen layers is single-process")
    if transfer.features:  # the frozen encoder's sentence vectors, once
        cache_features(encoder, data, run_info["precision"], trainer.strategy.root_device,
                       data_cfg.eval_batch_size)  # fmt: skip
    hparams = _flat_hparams(cfg)
    for lg in loggers:
        lg.log_hyperparams(hparams)
    started = time.monotonic()
    try:
        if resume:
            log.info("resuming from %s", resume)
        else:  # the step-0 baseline
            trainer.validate(model, datamodule=datamodule, verbose=False, weights_only=True)
        trainer.fit(model, datamodule=datamodule, ckpt_path=resume, weights_only=True)
        validated = metrics_file.history and metrics_file.history[-1]["step"] == trainer.global_step
        if stop.received is None and not validated:  # the metrics at the end
            trainer.validate(model, datamodule=datamodule, verbose=False, weights_only=True)
    except BaseException:
        metrics_file.status = "failed"
        if trainer.is_global_zero and metrics_file.history:
            metrics_file.write()
        raise

    metrics_file.extra["train_seconds"] = round(time.monotonic() - started, 1)
    if stopping:
        metrics_file.extra["stopped_tasks"] = stopping.stopped  # task -> step
    checkpoints = next((c for c in callbacks if isinstance(c, RunCheckpoints)), None)
    checkpoint = (checkpoints.best_model_path or None) if checkpoints else None
    metrics_file.extra["best_checkpoint"] = checkpoint
    metrics_file.extra["skipped_rows"] = {name: d.skipped for name, d in data.items()}
    tests = {name: d.splits["test"] for name, d in data.items() if "test" in d.splits}
    if tests and checkpoint and stop.received is None and trainer.is_global_zero:
        best = trained.load(checkpoint)  # the best checkpoint, on held-out rows
        metrics_file.extra["test"] = evaluate(best, tests, "test", trainer.strategy.root_device)
    metrics_file.status = "finished" if stop.received is None else "stopped"
    summary = metrics_file.summary()
    if trainer.is_global_zero:
        metrics_file.write()
        for lg in loggers:  # TensorBoard's HPARAMS tab: the settings beside their results
            lg.log_hyperparams(hparams, metrics=_hparam_metrics(summary))
            lg.finalize("success")  # written to disk before the process ends
        print(format_summary(summary, list(tasks), output_dir, checkpoint))
    if stop.received is not None:
        raise RunStoppedError(stop.received, output_dir, trainer.global_step)
    return summary


def _encoder_source(cfg: EncoderConfig, start: trained.TrainedModel | None) -> dict:
    """Where the encoder's weights came from, for metrics.json and model cards."""
    if start is not None:
        return {"init_from": cfg.init_from, "checkpoint": str(start.source),
                "started_from": start.info.get("encoder_source")}  # fmt: skip
    return {"pretrained": cfg.pretrained} if cfg.pretrained else {"pretrained": None}


def _hparam_metrics(summary: dict) -> dict[str, float]:
    """The results shown beside each run's settings: best and final validation scores and
    task metrics (hparams/best/..., hparams/final/...)."""
    return {
        f"hparams/{part}/{key[4:]}": value
        for part in ("best", "final")
        for key, value in (summary[part] or {}).items()
        if key.startswith("val/")
    }


def _flat_hparams(cfg: DictConfig) -> dict:
    """Scalar settings for TensorBoard's HPARAMS tab: task list, encoder, sampler, optimizer."""
    flat = {"tasks": ",".join(cfg.task), "seed": cfg.seed}
    for group in ("encoder", "sampler", "balancer", "optimizer", "scheduler", "data", "transfer"):
        container = OmegaConf.to_container(cfg[group], resolve=True, enum_to_str=True)
        for key, value in container.items():
            if isinstance(value, str | int | float | bool) or value is None:
                flat[f"{group}/{key}"] = str(value) if value is None else value
    flat["trainer/max_steps"] = cfg.trainer.get("max_steps", -1)
    return flat


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
    """One run, or a cross-validation of K runs; returns the score a sweeper maximizes: the
    best validation score, or the pooled out-of-fold score."""
    cli.quiet_known_warnings()
    keep_freed_memory()  # here, not in main(): launchers run jobs in processes of their own
    try:
        if cfg.cv.folds:
            return cross_validate(cfg, train)["pooled_score"]
        return train(cfg)["best"]["val/score"]
    except MtlError as e:
        sys.exit(f"error: {e}")
    except RunStoppedError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(128 + e.signum)


def main() -> float:
    """Entry point (`python -m mtl.train`, `mtl-train`); returns val/score at the best step
    (for sweepers that optimize)."""
    register()
    sys.argv = sys.argv[:1] + resume_arguments(sys.argv[1:])
    return _hydra_main()


if __name__ == "__main__":
    main()
