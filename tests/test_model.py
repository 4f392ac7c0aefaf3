"""The LightningModule on hand-made batches (no DataModule), PCGrad's update through it, and
the layering of the package (arrows point down only)."""

import ast
import copy
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from mtl.balancing import PCGrad, StaticBalancer, flat_gradients
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
    reference = copy.deepcopy(model)
    batch = batches(joint=True)[0]
    shared = [p for p in reference.encoder.parameters()]
    g, heads = [], {}
    for p in batch["parts"]:
        loss = {"score": 1.0, "mood": 0.5}[p["task"]] * reference.task_losses([p])[p["task"]]
        head = list(reference.heads[p["task"]].parameters())
        grads = torch.autograd.grad(loss, shared + head)
        g.append(flat_gradients(grads[: len(shared)], shared).double())
        heads[p["task"]] = grads[len(shared) :]
    d = torch.dot(g[0], g[1])
    assert d < 0, "the two tasks' gradients must conflict for this test to mean anything"
    expected = g[0] + g[1] - d / g[1].dot(g[1]) * g[1] - d / g[0].dot(g[0]) * g[0]

    recorder = fit(model, [batch], steps=1)
    got = recorder.grads[0]
    update = torch.cat(
        [got[f"encoder.{n}"].reshape(-1) for n, _ in model.encoder.named_parameters()]
    )
    assert torch.allclose(update.double(), expected, rtol=1e-4, atol=1e-7)
    assert not torch.allclose(update.double(), g[0] + g[1], rtol=1e-3)  # projection did act
    for task, grads in heads.items():
        for (name, _), expected_grad in zip(
            model.heads[task].named_parameters(), grads, strict=True
        ):
            assert torch.allclose(got[f"heads.{task}.{name}"], expected_grad, atol=1e-7)


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
