"""Running mtl's commands as `python -m <module> args...` would, for the tests: in this process
by default (no interpreter start, no import of torch, Lightning and Hydra per command), or in a
new interpreter where the process is the point (signals, DDP's ranks, launchers' workers,
process-wide malloc settings, the interpreter's own exit code).

In this process, a command runs the code of its module's `if __name__ == "__main__":` block
with `sys.argv`, the working directory, the environment and stdin set for it, and its stdout
and stderr captured (print, logging handlers, tqdm, warnings); exit codes are the
interpreter's (sys.exit(None): 0; sys.exit("message"): the message on stderr and 1; an
uncaught exception: its traceback on stderr and 1). Afterwards every process-global thing a
run changes is put back (cwd, environment, argv, sys.path, standard streams, logging
handlers and levels, signal handlers, warning filters, Hydra's global state, torch's default
dtype, threads, determinism, RNG states and compiled code), so that one test's run cannot
affect another's. Not put back: glibc's malloc settings (mtl.host_memory), which only a
process of its own shows.
"""

import ast
import contextlib
import functools
import importlib
import inspect
import io
import logging
import os
import random
import signal
import subprocess
import sys
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from hydra.core.global_hydra import GlobalHydra

TESTS = Path(__file__).resolve().parent


def _subprocess(
    module: str, *args: str, cwd: Path, env: dict | None = None, input: str | None = None
) -> subprocess.CompletedProcess:
    """`python -m <module> args...` in `cwd`, with tests/ importable (for test-only callbacks)."""
    path = os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": path, **(env or {})},
        input=input,
    )


MAIN_TESTS = ("__name__ == '__main__'", "'__main__' == __name__")


@functools.cache
def _entry(module: str) -> tuple[Callable[[], None], str]:
    """What `python -m module` runs: the body of its `if __name__ == "__main__":` block (or of
    the package's __main__.py), run in the imported module's namespace; and the file."""
    try:
        mod = importlib.import_module(module + ".__main__")
    except ModuleNotFoundError as e:
        if e.name != module + ".__main__":
            raise
        mod = importlib.import_module(module)
    file = inspect.getsourcefile(mod)
    tree = ast.parse(Path(file).read_text(), file)
    [block] = [
        node.body
        for node in tree.body
        if isinstance(node, ast.If) and ast.unparse(node.test) in MAIN_TESTS
    ]
    code = compile(ast.Module(body=block, type_ignores=[]), file, "exec")
    return lambda: exec(code, vars(mod)), file


class _Output(io.BytesIO):
    """A captured stream's bytes, readable after the command closed its stream."""

    def close(self) -> None:
        pass


def _stream(buffer: io.BytesIO, errors: str) -> io.TextIOWrapper:
    return io.TextIOWrapper(buffer, encoding="utf-8", errors=errors, write_through=True)


def _text(buffer: io.BytesIO) -> str:
    """As `subprocess.run(text=True)` reads a pipe: decoded, universal newlines."""
    return io.TextIOWrapper(io.BytesIO(buffer.getvalue()), encoding="utf-8").read()


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """The interpreter's own warning display, on the command's stderr (pytest records them)."""
    text = warnings.formatwarning(message, category, filename, lineno, line)
    (file or sys.stderr).write(text)


def _default_warning_filters() -> None:
    """The filters a fresh interpreter starts with (no -W, no PYTHONWARNINGS)."""
    warnings.resetwarnings()
    warnings.filterwarnings("default", category=DeprecationWarning, module="__main__")
    for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
        warnings.simplefilter("ignore", category, append=True)


def _loggers() -> list[logging.Logger]:
    manager = logging.Logger.manager
    return [logging.root] + [
        log for log in list(manager.loggerDict.values()) if isinstance(log, logging.Logger)
    ]


@contextlib.contextmanager
def _process_state(cwd: Path, env: dict | None, argv: list[str], stdin, out, err):
    """Within: what a fresh `python -m` would see (cwd, environment, argv, standard streams,
    warnings, no Hydra); after: every process-global thing a run changes put back, so that
    one test's run cannot change the next one's."""
    saved_env, saved_cwd, saved_argv = dict(os.environ), os.getcwd(), sys.argv
    saved_path, streams = sys.path[:], (sys.stdin, sys.stdout, sys.stderr)
    loggers = {log: (log.level, log.handlers[:], log.propagate, log.disabled) for log in _loggers()}
    handlers = {h for _, hs, _, _ in loggers.values() for h in hs}
    disable = logging.root.manager.disable
    redirected = {}  # handlers bound to this process's stdout/stderr write to the command's
    for handler in handlers:
        if type(handler) is logging.StreamHandler:
            if handler.stream in (sys.stdout, sys.__stdout__):
                redirected[handler] = handler.setStream(out)
            elif handler.stream in (sys.stderr, sys.__stderr__):
                redirected[handler] = handler.setStream(err)
    signals = {}
    for sig in signal.valid_signals():
        with contextlib.suppress(OSError, ValueError):
            signals[sig] = signal.getsignal(sig)
    torch_state = (
        torch.get_default_dtype(),
        torch.get_num_threads(),
        torch.get_float32_matmul_precision(),
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.is_grad_enabled(),
        torch.is_anomaly_enabled(),
    )
    rng = random.getstate(), np.random.get_state(), torch.get_rng_state()
    try:
        with warnings.catch_warnings():
            _default_warning_filters()
            warnings.showwarning = _show_warning
            GlobalHydra.instance().clear()
            os.chdir(cwd)
            os.environ.update(env or {})
            sys.argv = argv
            sys.stdin, sys.stdout, sys.stderr = stdin, out, err
            yield
    finally:
        sys.stdin, sys.stdout, sys.stderr = streams
        GlobalHydra.instance().clear()
        for log in _loggers():
            if log in loggers:
                log.level, kept, log.propagate, log.disabled = loggers[log]
            else:  # a logger the run created: keep only handlers that were there before
                kept = [h for h in log.handlers if h in handlers]
            for handler in log.handlers:
                if handler not in handlers:
                    handler.close()  # e.g. Hydra's file handler on the run's log file
            log.handlers[:] = kept
        logging.root.manager.disable = disable
        logging.Logger.manager._clear_cache()
        for handler, stream in redirected.items():
            handler.setStream(stream)
        for sig, handler in signals.items():
            if signal.getsignal(sig) is not handler:
                signal.signal(sig, handler)
        dtype, threads, matmul, deterministic, warn_only, grad, anomaly = torch_state
        torch.set_default_dtype(dtype)
        torch.set_num_threads(threads)
        torch.set_float32_matmul_precision(matmul)
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
        torch.set_grad_enabled(grad)
        torch.autograd.set_detect_anomaly(anomaly)
        random.setstate(rng[0])
        np.random.set_state(rng[1])
        torch.set_rng_state(rng[2])
        if "torch._dynamo" in sys.modules:  # what a compiled run cached (its recompile limit too)
            torch._dynamo.reset()
        sys.argv, sys.path[:] = saved_argv, saved_path
        os.chdir(saved_cwd)
        for key in set(os.environ) - set(saved_env):
            del os.environ[key]
        os.environ.update(saved_env)


def _in_process(
    module: str, *args: str, cwd: Path, env: dict | None = None, input: str | None = None
) -> subprocess.CompletedProcess:
    """What `_subprocess` does, in this process: the module's `__main__` code with `sys.argv`
    set, stdout and stderr captured (print, logging handlers, tqdm, warnings) and exit codes
    as the interpreter gives them (sys.exit(None): 0; sys.exit("message"): the message on
    stderr and 1; an uncaught exception: its traceback on stderr and 1)."""
    run, file = _entry(module)
    out_bytes, err_bytes = _Output(), _Output()
    out, err = _stream(out_bytes, "strict"), _stream(err_bytes, "backslashreplace")
    stdin = _stream(io.BytesIO((input or "").encode()), "strict")
    code = 0
    with _process_state(Path(cwd), env, [file, *args], stdin, out, err):
        try:
            run()
        except SystemExit as e:
            if isinstance(e.code, int | None):
                code = e.code or 0
            else:
                print(e.code, file=sys.stderr)
                code = 1
        except KeyboardInterrupt:
            raise  # Ctrl-C stops the test session
        except BaseException:
            traceback.print_exc()
            code = 1
    return subprocess.CompletedProcess(
        [sys.executable, "-m", module, *args], code, _text(out_bytes), _text(err_bytes)
    )


def run(module: str, *args: str, subprocess: bool = False, **kw) -> subprocess.CompletedProcess:
    """`python -m <module> args...` in this process, or (subprocess=True) in a new interpreter,
    for what needs one: signals, DDP's ranks, launchers' worker processes, the console script."""
    return (_subprocess if subprocess else _in_process)(module, *args, **kw)
