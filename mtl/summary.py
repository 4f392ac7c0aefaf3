"""What a run reports about itself: where its encoder came from, its settings and results for
TensorBoard's HPARAMS tab, and the summary table printed at its end."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from mtl import trained
from mtl.pretrained import EncoderConfig


def encoder_source(cfg: EncoderConfig, start: trained.TrainedModel | None) -> dict:
    """Where the encoder's weights came from, for metrics.json and model cards."""
    if start is not None:
        return {"init_from": cfg.init_from, "checkpoint": str(start.source),
                "started_from": start.info.get("encoder_source")}  # fmt: skip
    return {"pretrained": cfg.pretrained} if cfg.pretrained else {"pretrained": None}


def hparam_metrics(summary: dict) -> dict[str, float]:
    """The results shown beside each run's settings: best and final validation scores and
    task metrics (hparams/best/..., hparams/final/...)."""
    return {
        f"hparams/{part}/{key[4:]}": value
        for part in ("best", "final")
        for key, value in (summary[part] or {}).items()
        if key.startswith("val/")
    }


def flat_hparams(cfg: DictConfig) -> dict:
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
    columns = [(part, summary[part] or {}, "val/") for part in parts]
    if summary.get("test"):
        columns.append(("test", summary["test"], "test/"))
    by = summary["best_by"]
    rows = [f"{'task/metric':<34}" + "".join(f"{name:>10}" for name, _, _ in columns)]
    keys = [k for k in summary["final"] if k.startswith("val/") and k != "val/score"]
    keys.sort(key=lambda k: (tasks.index(k.split("/")[1]), k))
    for key in keys + ["val/score"]:
        name = "score (mean task score)" if key == "val/score" else key[4:]
        cells = [entry.get(prefix + key[4:], float("nan")) for _, entry, prefix in columns]
        rows.append(f"{name:<34}" + "".join(f"{c:>10.4f}" for c in cells))
    rows += [
        f"best step: {summary['best_step']} (by {by['monitor']}, "
        f"{'higher' if by['mode'] == 'max' else 'lower'} is better)",
        f"run directory:   {output_dir}",
        f"TensorBoard:     tensorboard --logdir {output_dir}",
        f"best checkpoint: {checkpoint or '(none saved)'}",
    ]
    return "\n".join(rows)
