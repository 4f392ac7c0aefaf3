"""Tensor files: safetensors written atomically, and torch files read as data only."""

from __future__ import annotations

import os
import pickle
import re
import warnings
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from mtl.errors import CheckpointError
from mtl.io import atomic_write


def atomic_save_safetensors(tensors: dict[str, Tensor], path: str | Path) -> None:
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp)))


def load_data(path: str | Path, mmap: bool = False) -> dict:
    """A torch file (checkpoint, pytorch_model.bin) read as data only: tensors and plain
    values, never code; with `mmap` its tensors are read only where used. Any failure is one
    line naming the file."""
    try:
        with warnings.catch_warnings():  # a plain pickle: the error below says what it is
            warnings.filterwarnings("ignore", "Detected pickle protocol")
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        found = re.search(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) (\S+)", str(e))
        if found:
            raise CheckpointError(
                f"{path}: holds objects other than tensors and plain data ({found[1]}); mtl "
                "reads checkpoints as data only and will not run the code a pickle may hold"
            ) from None
        raise CheckpointError(
            f"{path}: not a readable checkpoint (truncated, damaged, or not a torch file)"
        ) from None
    except OSError as e:
        if not (Path(path).is_file() and os.access(path, os.R_OK)):
            raise CheckpointError(f"{path}: cannot be read ({e.strerror or e})") from None
        raise _unreadable(path, e) from None  # torch's zip reader: EINVAL on a cut file
    except Exception as e:  # arbitrary bytes fail inside the unpickler in any way (IndexError, ...)
        raise _unreadable(path, e) from None


def _unreadable(path: str | Path, e: Exception) -> CheckpointError:
    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return CheckpointError(
        f"{path}: not a readable checkpoint (truncated, damaged, or not a torch file: "
        f"{type(e).__name__}{': ' * bool(first)}{first})"
    )


def load_safetensors(path: str | Path) -> dict[str, Tensor]:
    """A safetensors file; a damaged one is one line naming the file."""
    try:
        return load_file(path)
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None
