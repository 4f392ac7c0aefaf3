"""Train the shared encoder on several tasks at once: `python -m mtl.train [overrides]`.

One run writes into its Hydra run directory: the composed config (.hydra/), TensorBoard events
(tensorboard/), checkpoints (checkpoints/best.ckpt, last.ckpt) and metrics.json.
"""

from __future__ import annotations

import logging
import math
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import hydra
import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf

from mtl import cli, run_lock, trained
from mtl.best import Best
from mtl.callbacks import MetricsFile, failure_reason
from mtl.checkpointing import LAST, AtomicCheckpointIO, GracefulStop, RunCheckpoints
from mtl.config import ROOT, DataSettings, register
from mtl.cv import cross_validate, pooled_value
from mtl.data.datamodule import MultiTaskDataModule, steps_per_epoch
from mtl.data.datasets import with_dataset
from mtl.data.loading import TaskData, load_tasks
from mtl.encoder import Encoder
from mtl.errors import ConfigError, MtlError
from mtl.evaluate import evaluate
from mtl.feedback import TaskFeedback, TaskStopping
from mtl.host_memory import keep_freed_memory
from mtl.instantiate import build
from mtl.model import MultiTaskModel, OptimizerConfig, SchedulerConfig
from mtl.pretrained import EncoderConfig, build_encoder
from mtl.resume import check_resumed_encoder, resume_arguments, resume_checkpoint
from mtl.summary import encoder_source, flat_hparams, format_summary, hparam_metrics
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
    resume = resume_checkpoint(
        cfg.resume, list(specs), cfg.resume_allow_changed_data, cfg.trainer.get("max_steps", -1)
    )
    return specs, resume


def train(cfg: DictConfig) -> dict:
    """Run one training job from a composed config; returns the metrics.json content."""
    specs, resume = check_run(cfg)
    pl.seed_everything(cfg.seed, workers=True)
    encoder_cfg, data_cfg = typed(cfg, "encoder", EncoderConfig), typed(cfg, "data", DataSettings)
    start = trained.load(encoder_cfg.init_from) if encoder_cfg.init_from else None
    encoder, tokenizer = build_encoder(
        encoder_cfg, (start.model.encoder, start.tokenizer) if start else None
    )
    if resume:
        check_resumed_encoder(cfg.resume, resume, encoder)
    data = build_data(specs, encoder, tokenizer, data_cfg, cfg.seed, encoder_cfg.text_prefix)
    task_sampler = build_sampler(cfg, data, data_cfg)
    run_info = describe_run(cfg, encoder_cfg, data_cfg, tokenizer, data, start)
    model = build_model(cfg, encoder, data, run_info)
    datamodule = MultiTaskDataModule(data, data_cfg, task_sampler, seed=cfg.seed)
    run = build_callbacks(cfg, task_sampler, data, data_cfg, run_info)
    loggers = [build(f"logger.{k}", c) for k, c in cfg.logger.items()]
    trainer: pl.Trainer = build(
        "trainer", cfg.trainer, callbacks=run.callbacks, logger=loggers,
        plugins=[AtomicCheckpointIO()],
    )  # fmt: skip
    prepare_transfer(cfg, trainer, encoder, data, run_info, data_cfg)
    hparams, output_dir = flat_hparams(cfg), Path(cfg.paths.output_dir)
    with run.metrics.recording_failure(write=trainer.is_global_zero):
        fit(trainer, model, datamodule, resume, run, loggers, hparams)
        if run.stop.received is None and trainer.is_global_zero:
            score_test(run, data, trainer.strategy.root_device)
        summary = run.metrics.summary()
        if trainer.is_global_zero:
            publish(summary, run, loggers, hparams, list(data), output_dir)
    if run.stop.received is not None:
        raise RunStoppedError(run.stop.received, output_dir, trainer.global_step)
    return summary


def build_data(
    specs: dict[str, TaskSpec], encoder: Encoder, tokenizer, cfg: DataSettings, seed: int,
    text_prefix: str | None = None,
) -> dict[str, TaskData]:  # fmt: skip
    """Every task's splits read, checked, fitted and tokenized (the heads are sized from them),
    each text after `text_prefix`."""
    for name, spec in specs.items():
        if (spec.max_length or 0) > encoder.cfg.max_position:
            raise ConfigError(
                f"task.{name}.max_length={spec.max_length} exceeds the encoder's "
                f"{encoder.cfg.max_position} positions"
            )
    data = load_tasks(specs, tokenizer, cfg, seed, text_prefix)
    for name, d in data.items():
        log.info("task %s: %d training rows, %s", name, len(d.splits["train"]), d.task.kind)
    return data


def build_sampler(cfg: DictConfig, data: dict[str, TaskData], data_cfg: DataSettings):
    """The task sampler over the tasks' training sizes (`sampler` group)."""
    batch_sizes = {name: d.task.spec.batch_size or data_cfg.batch_size for name, d in data.items()}
    lengths = {name: d.splits["train"].lengths for name, d in data.items()}
    return build(
        "sampler",
        cfg.sampler,
        sizes=[len(d.splits["train"]) for d in data.values()],
        names=list(data),
        total_steps=cfg.trainer.max_steps,
        steps_per_epoch=steps_per_epoch(lengths, batch_sizes, data_cfg, cfg.seed),
    )


def build_model(
    cfg: DictConfig, encoder: Encoder, data: dict[str, TaskData], run_info: dict
) -> MultiTaskModel:
    """The LightningModule: the encoder, a head per task, the optimizer and the balancer."""
    tasks = {name: d.task for name, d in data.items()}
    balancer = build(
        "balancer",
        cfg.balancer,
        names=list(tasks),
        loss_weights={name: t.spec.loss_weight for name, t in tasks.items()},
        seed=cfg.seed,
    )
    optimizer = typed(cfg, "optimizer", OptimizerConfig)
    scheduler = typed(cfg, "scheduler", SchedulerConfig)
    model = MultiTaskModel(encoder, tasks, optimizer, scheduler, balancer, run_info)
    compile_mode = cfg.encoder.compile
    if compile_mode:  # in place: parameter names, checkpoints and exports unchanged
        model.encoder.compile(mode=compile_mode)
    return model


def describe_run(
    cfg: DictConfig, encoder_cfg: EncoderConfig, data_cfg: DataSettings, tokenizer,
    data: dict[str, TaskData], start: trained.TrainedModel | None,
) -> dict:  # fmt: skip
    """What a checkpoint records to be used without this run (mtl/trained.py)."""
    return {
        "tokenizer": tokenizer.to_str(),
        "max_length": encoder_cfg.max_length,
        "text_prefix": encoder_cfg.text_prefix,
        "precision": str(cfg.trainer.get("precision", "32-true")),
        "eval_batch_size": data_cfg.eval_batch_size,
        "seed": cfg.seed,
        "on_bad_row": data_cfg.on_bad_row.value,
        "data": {name: d.summary() for name, d in data.items()},
        "encoder_source": encoder_source(encoder_cfg, start),
        "config": OmegaConf.to_yaml(cfg, resolve=True),
    }


@dataclass
class RunCallbacks:
    """The callbacks of a run, and those of them that train() reads back."""

    callbacks: list[pl.Callback]
    metrics: MetricsFile
    stop: GracefulStop
    checkpoints: RunCheckpoints | None
    stopping: TaskStopping | None

    @property
    def best_checkpoint(self) -> str | None:
        """best.ckpt's path, once a trained state was validated (else None)."""
        return (self.checkpoints.best_model_path or None) if self.checkpoints else None


def build_callbacks(
    cfg: DictConfig, task_sampler, data: dict[str, TaskData], data_cfg: DataSettings,
    run_info: dict,
) -> RunCallbacks:  # fmt: skip
    """The configured callbacks (`callbacks` group) and mtl's own: the metrics file, the losses'
    way back to the task sampler, graceful stops, transfer schedules and per-task patience."""
    metrics = MetricsFile(Path(cfg.paths.output_dir) / "metrics.json", Best.of(cfg))
    metrics.extra |= {"encoder": run_info["encoder_source"], "data": run_info["data"]}
    stop = GracefulStop()
    callbacks = [build(f"callbacks.{k}", c) for k, c in cfg.callbacks.items() if c is not None]
    checkpoints = next((c for c in callbacks if isinstance(c, RunCheckpoints)), None)
    callbacks += [TaskFeedback(task_sampler), metrics, stop]
    transfer = typed(cfg, "transfer", TransferConfig)
    if transfer.probe_steps or transfer.unfreeze_every:
        callbacks.append(EncoderUnfreezing(transfer.probe_steps, transfer.unfreeze_every))
    tasks = {name: d.task for name, d in data.items()}
    patience = {name: t.spec.patience for name, t in tasks.items() if t.spec.patience}
    stopping = None
    if patience:
        counted = [name for name, t in tasks.items() if t.score_weight > 0]
        delay = 2 * data_cfg.num_workers + 1  # batches the loader may have drawn already
        stopping = TaskStopping(task_sampler, patience, counted, delay, transfer.probe_steps)
        callbacks.append(stopping)
    return RunCallbacks(callbacks, metrics, stop, checkpoints, stopping)


def prepare_transfer(
    cfg: DictConfig, trainer: pl.Trainer, encoder: Encoder, data: dict[str, TaskData],
    run_info: dict, data_cfg: DataSettings,
) -> None:  # fmt: skip
    """Feature extraction's sentence vectors, computed once by the frozen encoder."""
    transfer = typed(cfg, "transfer", TransferConfig)
    for key in ("probe_steps", "unfreeze_every"):
        if getattr(transfer, key) and trainer.world_size > 1:
            raise ConfigError(f"transfer.{key}: a schedule of frozen layers is single-process")
    if transfer.features:
        cache_features(encoder, data, run_info["precision"], trainer.strategy.root_device,
                       data_cfg.eval_batch_size)  # fmt: skip


def fit(
    trainer: pl.Trainer, model: MultiTaskModel, datamodule: MultiTaskDataModule,
    resume: Path | None, run: RunCallbacks, loggers: list, hparams: dict,
) -> None:  # fmt: skip
    """Validate the untrained state (the step-0 baseline), train, and validate the end state
    if the last step fell between validations (train() marks a failure in metrics.json)."""
    for lg in loggers:
        lg.log_hyperparams(hparams)
    started = time.monotonic()
    if resume:
        log.info("resuming from %s", resume)
    else:
        trainer.validate(model, datamodule=datamodule, verbose=False, weights_only=True)
    trainer.fit(model, datamodule=datamodule, ckpt_path=resume, weights_only=True)
    history = run.metrics.history
    validated = history and history[-1]["step"] == trainer.global_step
    if run.stop.received is None and not validated:
        trainer.validate(model, datamodule=datamodule, verbose=False, weights_only=True)
    extra = run.metrics.extra
    extra["train_seconds"] = round(time.monotonic() - started, 1)
    if run.stopping:
        extra["stopped_tasks"] = run.stopping.stopped  # task -> step
    extra["best_checkpoint"] = run.best_checkpoint
    extra["skipped_rows"] = {name: d.skipped for name, d in datamodule.data.items()}
    run.metrics.status = "finished" if run.stop.received is None else "stopped"


def score_test(run: RunCallbacks, data: dict[str, TaskData], device) -> None:
    """The best checkpoint's metrics on the tasks' test splits (metrics.json's "test")."""
    tests = {name: d.splits["test"] for name, d in data.items() if "test" in d.splits}
    if tests and run.best_checkpoint:
        best = trained.load(run.best_checkpoint)
        run.metrics.extra["test"] = evaluate(best, tests, "test", device)


def publish(
    summary: dict, run: RunCallbacks, loggers: list, hparams: dict, tasks: list[str],
    output_dir: Path,
) -> None:  # fmt: skip
    """metrics.json, TensorBoard's HPARAMS tab (settings beside results) and the summary table."""
    run.metrics.write()
    for lg in loggers:
        lg.log_hyperparams(hparams, metrics=hparam_metrics(summary))
        lg.finalize("success")  # written to disk before the process ends
    print(format_summary(summary, tasks, output_dir, run.best_checkpoint))


def job(cfg: DictConfig) -> float:
    """One run, or a cross-validation of K runs; returns the value a sweeper optimizes: the
    monitored metric at the best step (`mtl.best.Best`), or its pooled out-of-fold value."""
    best = Best.of(cfg)
    if cfg.cv.folds:
        return pooled_value(cross_validate(cfg, train), best.monitor)
    return (train(cfg)["best"] or {}).get(best.monitor, math.nan)


@hydra.main(version_base="1.3", config_path=str(ROOT / "conf"), config_name="train")
def _hydra_main(cfg: DictConfig) -> float:
    """`job` with mtl's error exits: one line for bad input, 128 + N for a stop by signal N,
    and one line with the resume command for the machine's limits (a full disk, a denied
    write, no memory). Any other exception is a bug in mtl: its traceback is what a report
    needs, so it is kept (metrics.json says failed either way)."""
    cli.quiet_known_warnings()
    keep_freed_memory()  # here, not in main(): launchers run jobs in processes of their own
    try:
        return job(cfg)
    except MtlError as e:
        sys.exit(f"error: {e}")
    except RunStoppedError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(128 + e.signum)
    except (OSError, MemoryError) as e:
        sys.exit(f"error: {failure_reason(e)}{resume_hint(Path(cfg.paths.output_dir))}")


def resume_hint(output_dir: Path) -> str:
    """How to continue a run that failed, where it saved a state to continue from."""
    if (output_dir / "checkpoints" / LAST).is_file():
        return f"; the run can be resumed with: python -m mtl.train resume={output_dir}"
    return ""


def main() -> float:
    """Entry point (`python -m mtl.train`, `mtl-train`); returns the monitored metric at the
    best step (for sweepers that optimize)."""
    register()
    sys.argv = sys.argv[:1] + resume_arguments(sys.argv[1:])
    try:
        return _hydra_main()
    finally:
        run_lock.release_all()  # the run's directory, claimed by mtl/run_guard.py


if __name__ == "__main__":
    main()
