"""What the commands that use a trained model share: their arguments and their error exits."""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable

import torch

from mtl.errors import MtlError, describe_os_error
from mtl.host_memory import keep_freed_memory


def model_arguments(parser: argparse.ArgumentParser, several: bool) -> None:
    """The models to use, the device and the batch size."""
    parser.add_argument(
        "models",
        nargs="+" if several else None,
        metavar="MODEL",
        help="a run directory (its best checkpoint), a checkpoint file or an exported model"
        + (" (several: an ensemble that averages their outputs)" if several else ""),
    )
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    parser.add_argument(
        "--batch-size", type=int, default=None, help="rows per batch (default: the model's)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def device(name: str) -> torch.device:
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise MtlError(f"--device {name!r} is not a device (cpu, cuda, cuda:N)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise MtlError(f"--device {name}: no CUDA GPU is available here")
    return dev


def quiet_known_warnings() -> None:
    """Known, harmless notices that would otherwise bury a command's output."""
    warnings.filterwarnings("ignore", message=".*will save all targets and predictions in")
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")


def run(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> None:
    """Run a command's main; bad input, or a file the system refuses (permissions, a read-only
    or full disk), ends it with one line on stderr and exit code 1."""
    quiet_known_warnings()
    keep_freed_memory()
    try:
        code = main(argv)
    except MtlError as e:
        sys.exit(f"error: {e}")
    except OSError as e:  # a file the system refused: unwritable, read-only, under a file, ...
        sys.exit(f"error: {describe_os_error(e)}")
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(code or 0)
