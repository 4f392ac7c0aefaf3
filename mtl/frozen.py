"""Frozen weights stored once: a checkpoint holds what trains and refers to a file beside it
for what stays frozen for the whole run.

A run that freezes part of its encoder (`encoder.freeze_embeddings`, `encoder.freeze_layers`,
feature extraction) never changes those tensors, yet every checkpoint held a copy of them
(multilingual-e5-small's 250k-row word embedding is 384 MB). Now the model names them in each
checkpoint it saves (`KEYS`); the checkpoint writer (`split`) stores them in
`frozen-<sha256 prefix>.safetensors` beside the checkpoint, named by its content so that it is
written once and never overwritten, and leaves in the checkpoint a reference (`REFERENCE`: the
file's name, size and sha256, and the keys). `load_checkpoint` reads a checkpoint back whole:
resume, predict, evaluate, export and `encoder.init_from` all read through it. A missing or
changed file is an error naming it; checkpoints with every weight inline (all those written
before this existed) read as they are.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from safetensors.torch import save
from torch import Tensor

from mtl.data.fingerprint import file_fingerprint
from mtl.errors import CheckpointError
from mtl.io import atomic_write
from mtl.tensor_files import load_data, load_safetensors

KEYS = "mtl_frozen_keys"  # the model's list of state-dict keys frozen for the whole run
REFERENCE = "mtl_frozen"  # {"file", "bytes", "sha256", "keys"}: where those weights are
PATTERN = "frozen-*.safetensors"


class FrozenStore:
    """Moves a checkpoint's frozen weights into a content-named file beside it (one writer per
    run: the tensors of a frozen key do not change while it runs, so the file of a folder is
    remembered rather than serialized again at every save)."""

    def __init__(self) -> None:
        self._written: dict[tuple, dict] = {}  # (folder, tensors' identity) -> reference

    def split(self, checkpoint: dict, folder: Path) -> dict:
        """`checkpoint` with the weights its `KEYS` names replaced by a `REFERENCE` to them."""
        keys = checkpoint.get(KEYS)
        if not keys:
            return {k: v for k, v in checkpoint.items() if k != KEYS}
        state = checkpoint["state_dict"]
        frozen = {k: state[k].contiguous() for k in keys}
        identity = (folder, *((k, t.data_ptr(), t._version, t.shape) for k, t in frozen.items()))
        reference = self._written.get(identity)
        if reference is None or not (folder / reference["file"]).is_file():
            reference = self._written[identity] = _write(frozen, folder)
        kept = {k: v for k, v in state.items() if k not in frozen}
        rest = {k: v for k, v in checkpoint.items() if k not in (KEYS, "state_dict")}
        return {**rest, "state_dict": kept, REFERENCE: reference}


def _write(frozen: dict[str, Tensor], folder: Path) -> dict:
    data = save(frozen)
    sha = hashlib.sha256(data).hexdigest()
    name = PATTERN.replace("*", sha[:16])
    if not (folder / name).is_file():  # the same name holds the same bytes
        atomic_write(folder / name, lambda tmp: tmp.write_bytes(data))
    return {"file": name, "bytes": len(data), "sha256": sha, "keys": list(frozen)}


def load_checkpoint(path: str | Path) -> dict:
    """A checkpoint file read as data, with the frozen weights it refers to put back into its
    state dict."""
    checkpoint = load_data(path)
    if not isinstance(checkpoint, dict) or REFERENCE not in checkpoint:
        return checkpoint
    reference = checkpoint.pop(REFERENCE)
    file = frozen_file(Path(path), reference)
    tensors = load_safetensors(file)
    absent = [k for k in reference["keys"] if k not in tensors]
    if absent:
        raise CheckpointError(f"{file}: holds no {absent[0]!r}, which {path} refers to")
    checkpoint["state_dict"].update({k: tensors[k] for k in reference["keys"]})
    return checkpoint


def frozen_file(path: Path, reference: dict) -> Path:
    """The file beside checkpoint `path` that `reference` names, checked to be the one written
    with it (size and sha256)."""
    file = path.parent / reference["file"]
    if not file.is_file():
        raise CheckpointError(
            f"{path}: its frozen weights are stored once per run in {file}, which is missing; "
            f"keep {reference['file']} beside the checkpoint when moving or copying it"
        )
    now = file_fingerprint(file)
    if (now["bytes"], now["sha256"]) != (reference["bytes"], reference["sha256"]):
        raise CheckpointError(
            f"{file}: changed since {path} was written with it (sha256 {now['sha256']}, "
            f"recorded {reference['sha256']}); the checkpoint's frozen weights are gone"
        )
    return file
