"""Read a trained model back: from a run directory, a checkpoint, or an exported directory.

Evaluate, predict, export and `encoder.init_from` all read models through `load`:

- a run directory means its `checkpoints/best.ckpt`;
- a checkpoint file (`*.ckpt`) is read as data (`weights_only=True`, with the frozen weights
  it stores beside it: mtl/frozen.py) and must hold the `mtl_model` entry that training
  writes (encoder shape, tasks, tokenizer, run info);
- an exported directory (`mtl.json` beside a Hugging Face encoder folder) needs no run at all;
- a directory with `ensemble.json` lists several members (folds of a cross-validation, or
  seeds); a sweep directory is refused with the list of its runs.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer
from torch import nn

from mtl.errors import CheckpointError, MtlError
from mtl.frozen import load_checkpoint
from mtl.io import read_json_object
from mtl.model import CHECKPOINT_FORMAT, MultiTaskModel
from mtl.pretrained import encoder_from_description, load_encoder
from mtl.tasks import Task, stored_tasks
from mtl.tensor_files import load_safetensors
from mtl.tokenizer import load_tokenizer, tokenizer_from_json

EXPORT_FILE = "mtl.json"  # marks an exported model directory
HEADS_FILE = "heads.safetensors"
ENSEMBLE_FILE = "ensemble.json"  # {"members": [relative paths]}: one model made of several


@dataclass
class TrainedModel:
    """A model read back, in eval mode on the CPU, with what it needs to be used."""

    model: MultiTaskModel
    tokenizer: Tokenizer
    info: dict  # step, metrics, precision, eval_batch_size, seed, data, encoder source, config
    source: Path  # the checkpoint file or export directory it was read from

    @property
    def tasks(self) -> dict[str, Task]:
        return self.model.tasks

    @property
    def text_prefix(self) -> str | None:
        """What goes before every text (encoder.text_prefix; None for models written without)."""
        return self.info.get("text_prefix")

    def autocast(self, device: torch.device):
        """The precision the model was trained (and validated) in: bf16 autocast or fp32."""
        if str(self.info.get("precision", "32")).startswith("bf16"):
            return torch.autocast(device.type, dtype=torch.bfloat16)
        return nullcontext()


def resolve(path: str | Path, _listed_by: tuple[Path, ...] = ()) -> list[Path]:
    """The checkpoint files or export directories that `path` names (several: an ensemble);
    an ensemble that lists itself, directly or through another, is an error naming it."""
    p = Path(path).expanduser()
    if p.resolve() in _listed_by:
        raise CheckpointError(f"{p / ENSEMBLE_FILE}: the ensemble lists itself (a cycle)")
    if not p.exists():
        raise CheckpointError(f"{p}: no such file or directory")
    if p.is_file() or (p / EXPORT_FILE).is_file():
        return [p]
    if (p / ENSEMBLE_FILE).is_file():
        members = read_json_object(p / ENSEMBLE_FILE, CheckpointError).get("members") or []
        listed_by = (*_listed_by, p.resolve())
        return [m for member in members for m in resolve(p / member, listed_by)]
    best = p / "checkpoints" / "best.ckpt"
    if best.is_file():
        return [best]
    runs = sorted(d for d in p.rglob("checkpoints/best.ckpt"))
    if runs:
        listed = "\n  ".join(str(r.parents[1]) for r in runs)
        raise CheckpointError(
            f"{p} holds {len(runs)} runs (a sweep?); name the ones to use, several at once "
            f"form an ensemble:\n  {listed}"
        )
    if (p / "metrics.json").is_file() or (p / ".hydra").is_dir():
        raise CheckpointError(
            f"{p}: this run has no checkpoints/best.ckpt (did it stop before its first "
            "validation during training?)"
        )
    raise CheckpointError(
        f"{p}: not an mtl run directory, checkpoint or exported model (it has no "
        f"checkpoints/best.ckpt, {EXPORT_FILE} or {ENSEMBLE_FILE})"
    )


def load_all(paths: list[str | Path]) -> list[TrainedModel]:
    """Every model the paths name, in order (an ensemble when more than one)."""
    return [read(p) for path in paths for p in resolve(path)]


def load(path: str | Path) -> TrainedModel:
    """Exactly one model."""
    found = resolve(path)
    if len(found) != 1:
        listed = "\n  ".join(map(str, found))
        raise CheckpointError(f"{path}: holds {len(found)} models; name one of them:\n  {listed}")
    return read(found[0])


def read(path: Path) -> TrainedModel:
    """One checkpoint file or export directory, as `resolve` returns them. Reading a model
    leaves the caller's random state as it was."""
    with torch.random.fork_rng(devices=[]):
        if path.is_dir():
            return _read_export(path)
        return _read_checkpoint(path)


DESCRIPTION_TYPES = {"encoder": dict, "tasks": dict, "tokenizer": str, "max_length": int}


def checked_description(path: Path, checkpoint: object) -> dict:
    """A checkpoint's `mtl_model` entry, checked to hold what reading the model needs (the
    encoder's shape, the tasks, the tokenizer, the weights), else one error naming the entry."""
    if not isinstance(checkpoint, dict) or "mtl_model" not in checkpoint:
        raise CheckpointError(
            f"{path}: not an mtl checkpoint (it has no 'mtl_model' entry; was it written by "
            "mtl.train?)"
        )
    description = checkpoint["mtl_model"]
    _check_entry(path, "mtl_model", description, dict)
    _check_format(path, description.get("format"))
    for key, kind in DESCRIPTION_TYPES.items():
        _check_entry(path, f"mtl_model.{key}", description.get(key), kind)
    if description["max_length"] <= 0:
        raise CheckpointError(
            f"{path}: damaged mtl checkpoint: its 'mtl_model.max_length' entry is "
            f"{description['max_length']}, not a positive number of tokens"
        )
    _check_entry(path, "state_dict", checkpoint.get("state_dict"), dict)
    return description


def _check_entry(path: Path, key: str, value: object, kind: type) -> None:
    if not isinstance(value, kind) or isinstance(value, bool):
        found = "missing" if value is None else f"a {type(value).__name__}"
        raise CheckpointError(
            f"{path}: damaged mtl checkpoint: its {key!r} entry is {found}, not a "
            f"{'mapping' if kind is dict else kind.__name__}"
        )


def _read_checkpoint(path: Path) -> TrainedModel:
    checkpoint = load_checkpoint(path)
    description = checked_description(path, checkpoint)
    info = {k: v for k, v in description.items() if k not in ("format", "encoder", "tasks")}
    try:
        tokenizer = tokenizer_from_json(info.pop("tokenizer"), info["max_length"])
    except Exception as e:  # the tokenizers library raises a bare Exception for bad JSON
        raise CheckpointError(
            f"{path}: damaged mtl checkpoint: its 'mtl_model.tokenizer' entry cannot be read ({e})"
        ) from None
    encoder = encoder_from_description(description["encoder"], str(path))
    model = MultiTaskModel(encoder, _tasks(path, description["tasks"]))
    state = checkpoint["state_dict"]
    for prefix, module in (("encoder.", model.encoder), ("heads.", model.heads)):
        _load_weights(path, module, {k[len(prefix) :]: v for k, v in state.items()
                                     if k.startswith(prefix)})  # fmt: skip
    _check_finite(path, model)
    return TrainedModel(model.eval(), tokenizer, info, path)


def _read_export(path: Path) -> TrainedModel:
    for name in ("config.json", "model.safetensors", HEADS_FILE, EXPORT_FILE):
        if not (path / name).is_file():
            raise CheckpointError(f"{path}: the exported model is missing {name}")
    description = read_json_object(path / EXPORT_FILE, CheckpointError)
    _check_format(path / EXPORT_FILE, description.get("format"))
    for key in ("info", "tasks"):
        if not isinstance(description.get(key), dict):
            raise CheckpointError(f"{path / EXPORT_FILE}: key {key!r} is missing or not an object")
    info = dict(description["info"])
    if "max_length" not in info:
        raise CheckpointError(f"{path / EXPORT_FILE}: key 'info.max_length' is missing")
    model = MultiTaskModel(load_encoder(path), _tasks(path, description["tasks"]))
    heads = load_safetensors(path / HEADS_FILE)
    _load_weights(path / HEADS_FILE, model.heads, heads)
    tokenizer = load_tokenizer(path, info["max_length"])
    _check_finite(path, model)
    return TrainedModel(model.eval(), tokenizer, info, path)


def _tasks(source: Path, described: dict) -> dict[str, Task]:
    try:
        return stored_tasks(described)
    except (MtlError, AttributeError, KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{source}: its task descriptions cannot be read ({e})") from None


def _load_weights(source: Path, module: nn.Module, state: dict) -> None:
    missing = sorted(set(module.state_dict()) - set(state))
    unexpected = sorted(set(state) - set(module.state_dict()))
    if missing or unexpected:
        raise CheckpointError(
            f"{source}: weights do not match the model it describes; missing: "
            f"{missing[:5] or 'none'}, unexpected: {unexpected[:5] or 'none'}"
        )
    try:
        module.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(f"{source}: {str(e).splitlines()[-1].strip()}") from None


def _check_finite(source: Path, model: nn.Module) -> None:
    """Weights holding NaN or infinity predict NaN (and labels argmax'ed from NaN): refused."""
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise CheckpointError(
                f"{source}: weight {name} holds NaN or infinity; the model is broken"
            )


def _check_format(source: Path, found: object) -> None:
    if found == CHECKPOINT_FORMAT:
        return
    if isinstance(found, int) and found > CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{source}: written by a newer mtl (format {found}; this one reads format "
            f"{CHECKPOINT_FORMAT}); upgrade mtl to read it"
        )
    raise CheckpointError(
        f"{source}: model format {found!r} is not one this mtl reads ({CHECKPOINT_FORMAT})"
    )
