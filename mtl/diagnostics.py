"""Task-relationship diagnostics: do the tasks pull the shared encoder the same way?

Every `every_n_steps` steps, one fixed training batch per task is run through the model and the
gradient of each task's loss on the shared encoder g_i is taken (no update). Logged:
`grad/norm/<task>` = ‖g_i‖, `grad/cos/<a>~<b>` = g_a·g_b / (‖g_a‖‖g_b‖), and the cosine
matrix as a heatmap `grad/cosine` (task names on the axes, values in the cells, blue = aligned,
red = conflicting) in TensorBoard's images.
"""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from matplotlib.figure import Figure
from pytorch_lightning.loggers import TensorBoardLogger
from torch import Tensor

from mtl.balancing import flat_gradients


class GradientDiagnostics(pl.Callback):
    def __init__(self, every_n_steps: int = 0, batch_size: int = 16) -> None:
        self.every_n_steps = every_n_steps
        self.batch_size = batch_size

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if not self.every_n_steps or step % self.every_n_steps or not trainer.is_global_zero:
            return
        grads = task_gradients(pl_module, trainer.datamodule.fixed_batches(self.batch_size))
        names = list(grads)
        G = torch.stack([grads[n] for n in names])  # (K, P)
        norms = G.norm(dim=1)
        cos = (G @ G.T) / (norms[:, None] * norms[None, :]).clamp(min=1e-20)  # (K, K)
        metrics = {f"grad/norm/{n}": float(norms[i]) for i, n in enumerate(names)}
        for i in range(len(names)):
            for j in range(i + 1, len(names)):
                metrics[f"grad/cos/{names[i]}~{names[j]}"] = float(cos[i, j])
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step)
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_figure("grad/cosine", cosine_figure(cos, names), step)


@torch.enable_grad()
def task_gradients(pl_module, batches: dict[str, dict]) -> dict[str, Tensor]:
    """Flat (P,) gradient of each task's loss (on its batch) on the trainable encoder
    parameters."""
    params = [p for p in pl_module.encoder.parameters() if p.requires_grad]
    grads = {}
    was_training = pl_module.training
    pl_module.eval()  # no dropout: the same batch gives the same gradient
    for name, part in batches.items():
        part = pl_module.transfer_batch_to_device(part, pl_module.device, 0)
        with pl_module.trainer.precision_plugin.forward_context():
            loss = pl_module.task_losses([part])[name]
        grads[name] = flat_gradients(torch.autograd.grad(loss, params, allow_unused=True), params)
    pl_module.train(was_training)
    return grads


def cosine_figure(matrix: Tensor, names: list[str]) -> Figure:
    """The task-gradient cosine matrix as a heatmap: task names on both axes, each value in its
    cell, a colour scale from red (-1, conflicting) through white (0) to blue (+1, aligned)."""
    m = matrix.detach().float().cpu().numpy()
    size = 1.2 + 0.9 * len(names)
    figure = Figure(figsize=(size + 1.2, size))
    ax = figure.subplots()
    image = ax.imshow(m, cmap="RdBu", vmin=-1, vmax=1)
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_yticks(range(len(names)), names)
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=9,
                    color="white" if abs(m[i, j]) > 0.6 else "black")  # fmt: skip
    figure.colorbar(image, ax=ax, label="cosine of task gradients on the encoder")
    ax.set_title("Task gradient cosines")
    figure.tight_layout()
    return figure
