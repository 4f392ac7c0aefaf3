"""The LightningModule on hand-made batches (no DataModule), gradient-level balancers' updates
through it (PCGrad, and one defined here alone), and the layering of the package (arrows point
down only)."""

import ast
import copy
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from mtl.balancing import GradientBalancer, PCGrad, StaticBalancer, flat_gradients
from mtl.model import MultiTaskModel

PACKAGE = Path(__file__).resolve().parents[1] / "mtl"


class Recorder(pl.Callback):
    """What the training loop sees: each step's outputs, and the gradients the optimizer gets."""

    def __init__(self) -> None:
        self.outputs, self.grads = [], []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.outputs.append(outputs)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.grads.append({n: p.grad.clone() for n, p in pl_module.named_parameters()
                           if p.grad is not None})  # fmt: skip


def fit(model: MultiTaskModel, data: list[dict], steps: int) -> Recorder:
    recorder = Recorder()
    trainer = pl.Trainer(
        max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[recorder],
    )  # fmt: skip
    trainer.fit(model, train_dataloaders=DataLoader(data, batch_size=None))
    assert trainer.datamodule is None
    return recorder


def test_training_step_runs_on_hand_made_batches_without_a_datamodule(tiny_model, batches):
    model = tiny_model(StaticBalancer)
    before = copy.deepcopy(model.state_dict())
    recorder = fit(model, batches(joint=False), steps=2)
    assert [set(o["losses"]) for o in recorder.outputs] == [{"score"}, {"mood"}]
    assert all(v > 0 for o in recorder.outputs for v in o["losses"].values())
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert any(k.startswith("encoder.") for k in changed)
    assert any(k.startswith("heads.score.") for k in changed)
    assert any(k.startswith("heads.mood.") for k in changed)


def test_pcgrad_update_through_the_model_is_the_projected_sum(tiny_model, batches):
    """The encoder gradient the optimizer receives is PCGrad's closed form for two tasks,
    u = g1 + g2 − (d/‖g2‖²)·g2 − (d/‖g1‖²)·g1 (d = g1·g2 < 0), from gradients taken here by hand;
    each head gets the gradient of its own weighted loss."""
    model = tiny_model(PCGrad, max_grad_norm=None)
    batch = batches(joint=True)[0]
    g, heads = task_gradients(model, batch)
    d = torch.dot(g[0], g[1])
    assert d < 0, "the two tasks' gradients must conflict for this test to mean anything"
    expected = g[0] + g[1] - d / g[1].dot(g[1]) * g[1] - d / g[0].dot(g[0]) * g[0]

    recorder = fit(model, [batch], steps=1)
    got = recorder.grads[0]
    update = encoder_gradient(model, got)
    assert torch.allclose(update.double(), expected, rtol=1e-4, atol=1e-7)
    assert not torch.allclose(update.double(), g[0] + g[1], rtol=1e-3)  # projection did act
    for task, grads in heads.items():
        for (name, _), expected_grad in zip(
            model.heads[task].named_parameters(), grads, strict=True
        ):
            assert torch.allclose(got[f"heads.{task}.{name}"], expected_grad, atol=1e-7)


class TaskGradientMean(GradientBalancer):
    """A gradient-level method in one class, known to no module of mtl: u = (1/K) Σ_i g_i."""

    def combine_gradients(self, grads: list[torch.Tensor], step: int) -> torch.Tensor:
        return torch.stack(grads).mean(0)  # (K, P) -> (P,)


def test_a_gradient_balancer_defined_here_trains_through_the_model(tiny_model, batches):
    """Two joint batches accumulated into one optimizer step: the encoder gets the mean over
    tasks of each task's weighted gradient summed over both batches; each head its own."""
    model = tiny_model(TaskGradientMean, max_grad_norm=None)
    model.optimizer_cfg.accumulate = 2
    before = copy.deepcopy(model.state_dict())
    data = batches(joint=True)  # the same two parts in both batches
    g, heads = task_gradients(model, data[0])

    recorder = fit(model, data, steps=1)
    assert len(recorder.grads) == 1
    got = recorder.grads[0]
    expected = (2 * g[0] + 2 * g[1]) / 2
    assert torch.allclose(encoder_gradient(model, got).double(), expected, rtol=1e-4, atol=1e-7)
    for task, grads in heads.items():
        for (name, _), expected_grad in zip(
            model.heads[task].named_parameters(), grads, strict=True
        ):
            assert torch.allclose(got[f"heads.{task}.{name}"], 2 * expected_grad, atol=1e-7)
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert any(k.startswith("encoder.") for k in changed)
    assert {k.split(".")[1] for k in changed if k.startswith("heads.")} == {"score", "mood"}


def task_gradients(model: MultiTaskModel, batch: dict) -> tuple[list[torch.Tensor], dict]:
    """By hand, on a copy: each part's weighted-loss gradient on the encoder (flat, float64)
    and on its task's head (a tuple per task), with the tiny model's loss weights."""
    reference = copy.deepcopy(model)
    shared = list(reference.encoder.parameters())
    g, heads = [], {}
    for p in batch["parts"]:
        loss = {"score": 1.0, "mood": 0.5}[p["task"]] * reference.task_losses([p])[p["task"]]
        head = list(reference.heads[p["task"]].parameters())
        grads = torch.autograd.grad(loss, shared + head)
        g.append(flat_gradients(grads[: len(shared)], shared).double())
        heads[p["task"]] = grads[len(shared) :]
    return g, heads


def encoder_gradient(model: MultiTaskModel, grads: dict[str, torch.Tensor]) -> torch.Tensor:
    """The encoder's part of a recorded step's gradients, flat (P,)."""
    return torch.cat(
        [grads[f"encoder.{n}"].reshape(-1) for n, _ in model.encoder.named_parameters()]
    )


def imports(module: str) -> set[str]:
    """The modules `module` imports at run time (imports for type checkers alone left out)."""
    tree = ast.parse((PACKAGE / module).read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            node.body = []
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def test_layering_is_visible_in_the_imports():
    assert not {m for m in imports("sampling.py") if m.startswith("mtl.data")}
    model_imports = imports("model.py")
    assert not {m for m in model_imports if m.startswith(("mtl.data", "mtl.sampling"))}
    assert "datamodule" not in (PACKAGE / "model.py").read_text()
    tasks = [f"tasks/{f.name}" for f in (PACKAGE / "tasks").glob("*.py")]
    balancing = [f"balancing/{f.name}" for f in (PACKAGE / "balancing").glob("*.py")]
    for module in (*tasks, *balancing, "encoder.py", "heads.py"):
        assert not {m for m in imports(module) if m.startswith(("mtl.data", "mtl.model"))}
