"""Weights frozen for a whole run are stored once beside its checkpoints (mtl/frozen.py):
smaller checkpoints, an exact resume, and every reader of a checkpoint through the commands."""

import io
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mtl.frozen import load_checkpoint

FROZEN = ["encoder=tiny", "encoder.freeze_embeddings=true", "encoder.freeze_layers=1",
          "trainer.max_steps=4", "trainer.val_check_interval=2"]  # fmt: skip
SNAPSHOT = [  # a checkpoint at step 2, written into a folder of its own
    "+callbacks.snapshots._target_=pytorch_lightning.callbacks.ModelCheckpoint",
    "+callbacks.snapshots.dirpath=${paths.output_dir}/snapshots",
    "+callbacks.snapshots.every_n_train_steps=2",
    "+callbacks.snapshots.save_top_k=-1",
]
TEXTS = "Ein kurzer Satz.\nNoch einer, etwas länger als der erste Satz.\n"


@pytest.fixture(scope="module")
def frozen_run(tmp_path_factory, mtl_train) -> Path:
    """A tiny run with its embeddings and bottom layer frozen, and a snapshot at step 2."""
    tmp = tmp_path_factory.mktemp("frozen")
    result = mtl_train(*FROZEN, *SNAPSHOT, f"hydra.run.dir={tmp}/run", cwd=tmp)
    assert result.returncode == 0, result.stderr[-3000:]
    return tmp / "run"


def frozen_file(folder: Path) -> Path:
    (file,) = folder.glob("frozen-*.safetensors")
    return file


def test_frozen_weights_are_stored_once_beside_the_checkpoints(frozen_run):
    folder = frozen_run / "checkpoints"
    file = frozen_file(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["best.ckpt", file.name, "last.ckpt"]
    stored = load_file(file)
    assert sorted(stored) == sorted(
        k for k in load_checkpoint(folder / "last.ckpt")["state_dict"]
        if k.startswith(("encoder.embeddings.", "encoder.layers.0."))
    )  # fmt: skip
    for name in ("last.ckpt", "best.ckpt"):
        raw = torch.load(folder / name, weights_only=True)
        assert not set(stored) & set(raw["state_dict"])  # what trains is all it holds
        assert any(k.startswith("encoder.layers.1.") for k in raw["state_dict"])
        whole = load_checkpoint(folder / name)["state_dict"]
        assert all(torch.equal(whole[k], v) for k, v in stored.items())
        inline = io.BytesIO()
        torch.save(load_checkpoint(folder / name), inline)  # as checkpoints were written before
        saved = inline.tell() - (folder / name).stat().st_size
        assert saved > 0.95 * file.stat().st_size, (saved, file.stat().st_size)


def test_a_run_with_frozen_weights_resumes_exactly(frozen_run, mtl_train, tmp_path):
    snapshot = next((frozen_run / "snapshots").glob("*step=2.ckpt"))
    assert frozen_file(snapshot.parent)  # each checkpoint folder has its own
    resumed = mtl_train(*FROZEN, f"resume='{snapshot}'", f"hydra.run.dir={tmp_path}/resumed",
                        cwd=tmp_path)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a = load_checkpoint(frozen_run / "checkpoints/last.ckpt")["state_dict"]
    b = load_checkpoint(tmp_path / "resumed/checkpoints/last.ckpt")["state_dict"]
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)  # bit for bit


def test_predict_export_and_init_from_read_the_frozen_weights(
    frozen_run, mtl_train, run_module, tmp_path
):
    texts = tmp_path / "texts.txt"
    texts.write_text(TEXTS)
    predicted = run_module("mtl.predict", str(frozen_run), "--input", str(texts), cwd=tmp_path)
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    # a checkpoint written with every weight inline (before mtl/frozen.py) reads alike
    old = tmp_path / "old.ckpt"
    torch.save(load_checkpoint(frozen_run / "checkpoints/best.ckpt"), old)
    again = run_module("mtl.predict", str(old), "--input", str(texts), cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout == predicted.stdout
    exported = run_module("mtl.export", str(frozen_run), str(tmp_path / "model"), cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr[-3000:]
    words = load_file(tmp_path / "model/model.safetensors")["embeddings.word_embeddings.weight"]
    stored = load_file(frozen_file(frozen_run / "checkpoints"))
    assert torch.equal(words, stored["encoder.embeddings.word.weight"])
    started = mtl_train("encoder=tiny", f"encoder.init_from={frozen_run}", "trainer.max_steps=1",
                        "trainer.val_check_interval=1", f"hydra.run.dir={tmp_path}/next",
                        cwd=tmp_path)  # fmt: skip
    assert started.returncode == 0, started.stderr[-3000:]
    assert not list((tmp_path / "next/checkpoints").glob("frozen-*"))  # nothing frozen there


def test_a_missing_or_changed_frozen_file_is_an_error_naming_it(
    frozen_run, mtl_train, run_module, tmp_path
):
    run = tmp_path / "run"
    shutil.copytree(frozen_run, run)
    file = frozen_file(run / "checkpoints")
    with open(file, "ab") as f:
        f.write(b"\0")
    predicted = run_module("mtl.predict", str(run), "--input", "-", input=TEXTS, cwd=tmp_path)
    assert predicted.returncode == 1
    assert f"error: {file}: changed since {run}/checkpoints/best.ckpt was written" in (
        predicted.stderr
    )
    file.unlink()
    resumed = mtl_train(f"resume={run}", "trainer.max_steps=6", cwd=tmp_path)
    assert resumed.returncode == 1
    assert (
        f"error: {run}/checkpoints/last.ckpt: its frozen weights are stored once per run in "
        f"{file}, which is missing; keep {file.name} beside the checkpoint" in resumed.stderr
    )
    assert json.loads((run / "metrics.json").read_text())["status"] == "finished"  # untouched
