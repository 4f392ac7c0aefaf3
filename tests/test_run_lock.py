"""One run per directory (mtl/run_lock.py): two runs started together, a directory held by a
live process, one left by a killed process (refused to a new run, taken over by its resume), and
a finished run's directory resumed."""

import json
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

from test_hostile_inputs import TINY

HELD = r"is in use by another run \(pid (\d+) on \S+ since [\d-]+ [\d:]+\); wait for it to end"
STALE = r"run\.lock is left by a run that no longer runs \(pid (\d+) .*\); if no process uses"


def one_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    [line] = [x for x in result.stderr.splitlines() if x.startswith("error: ")]
    return line


def test_of_two_runs_started_together_one_trains(tmp_path, mtl_train):
    run = tmp_path / "run"
    results = [None, None]

    def start(i: int) -> None:
        results[i] = mtl_train(*TINY, f"hydra.run.dir={run}", cwd=tmp_path, subprocess=True)

    threads = [threading.Thread(target=start, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    codes = sorted(r.returncode for r in results)
    assert codes == [0, 1], [r.stderr[-2000:] for r in results]
    loser = next(r for r in results if r.returncode == 1)
    assert re.search(f"{HELD}|already holds a run", one_error(loser))
    assert json.loads((run / "metrics.json").read_text())["status"] == "finished"
    assert not (run / "run.lock").exists()


def hold(directory: Path) -> subprocess.Popen:
    """A process that claims `directory` and sleeps, once its lock exists."""
    code = (
        "import sys, time; from pathlib import Path; from mtl import run_lock; "
        "run_lock.claim(Path(sys.argv[1])); print('held', flush=True); time.sleep(120)"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(directory)], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_held_directory_is_refused_and_a_killed_holders_lock_reported(tmp_path, mtl_train):
    run = tmp_path / "run"
    holder = hold(run)
    try:
        line = one_error(mtl_train(*TINY, f"hydra.run.dir={run}", cwd=tmp_path))
        assert re.search(HELD, line) and re.search(HELD, line)[1] == str(holder.pid), line
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    line = one_error(mtl_train(*TINY, f"hydra.run.dir={run}", cwd=tmp_path))
    assert re.search(STALE, line) and re.search(STALE, line)[1] == str(holder.pid), line
    assert (run / "run.lock").exists()  # reported, not taken
    (run / "run.lock").unlink()
    assert mtl_train(*TINY, f"hydra.run.dir={run}", cwd=tmp_path).returncode == 0


def test_a_resume_takes_over_the_lock_its_killed_run_left(tmp_path, mtl_train):
    run = tmp_path / "run"
    assert mtl_train(*TINY, f"hydra.run.dir={run}", cwd=tmp_path).returncode == 0
    holder = hold(run)  # then killed: as a run killed mid-training leaves its lock
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    resumed = mtl_train(f"resume={run}", "trainer.max_steps=6", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    said = resumed.stdout + resumed.stderr  # logged before Hydra's job starts: to stdout
    assert f"(pid {holder.pid} on " in said and "this resume takes it over" in said, said[-2000:]
    assert not (run / "run.lock").exists()


def test_a_lock_left_on_another_host_is_not_taken_over(tmp_path, mtl_train):
    run = tmp_path / "run"
    assert mtl_train(*TINY, f"hydra.run.dir={run}", cwd=tmp_path).returncode == 0
    (run / "run.lock").write_text("pid 1 on another-host since 2026-01-01 00:00:00\n")
    line = one_error(mtl_train(f"resume={run}", "trainer.max_steps=6", cwd=tmp_path))
    assert line == (  # whether pid 1 there still runs cannot be seen from here
        f"error: {run / 'run.lock'} was written by a run on another host (pid 1 on another-host "
        f"since 2026-01-01 00:00:00); if that run has ended, delete {run / 'run.lock'} and run again"
    )
    (run / "run.lock").write_bytes(b"\x00\xffgarbage")  # not a lock mtl wrote
    line = one_error(mtl_train(f"resume={run}", "trainer.max_steps=6", cwd=tmp_path))
    assert "(unreadable contents '\\x00\\ufffdgarbage')" in line and "\x00" not in line, line


def test_a_finished_runs_directory_is_unlocked_and_resumes(tmp_path, mtl_train):
    run = tmp_path / "run"
    assert mtl_train(*TINY, f"hydra.run.dir={run}", cwd=tmp_path).returncode == 0
    assert not (run / "run.lock").exists()
    resumed = mtl_train(f"resume={run}", "trainer.max_steps=6", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert not (run / "run.lock").exists()


def test_resuming_a_directory_a_live_run_holds_is_refused(tmp_path, mtl_train):
    run = tmp_path / "run"
    assert mtl_train(*TINY, f"hydra.run.dir={run}", cwd=tmp_path).returncode == 0
    holder = hold(run)
    try:
        line = one_error(mtl_train(f"resume={run}", "trainer.max_steps=6", cwd=tmp_path))
        assert re.search(HELD, line), line
        line = one_error(mtl_train(*TINY, f"hydra.run.dir={run}", cwd=tmp_path))
        assert re.search(HELD, line) and "resume=" not in line, line  # no resume to suggest
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()


def test_a_lock_that_cannot_be_taken_stops_the_run(tmp_path, mtl_train):
    """Hydra turns a callback's exception into a warning and runs on: a run.lock that is a
    directory, or a run directory under a file, must still stop the run with one line."""
    (tmp_path / "run/run.lock").mkdir(parents=True)
    (tmp_path / "afile").write_text("")
    for run in (tmp_path / "run", tmp_path / "afile/run"):
        line = one_error(mtl_train(*TINY, f"hydra.run.dir={run}", cwd=tmp_path))
        assert line.startswith(f"error: {run}") or line.startswith(f"error: {tmp_path}/afile"), line
        assert not (run / "checkpoints").exists()


def test_a_run_refused_before_it_starts_leaves_no_directory(tmp_path, mtl_train):
    for refused in (["data.batch_size=0"], [f"resume={tmp_path}/nowhere"]):  # config, resume
        result = mtl_train(*TINY, *refused, cwd=tmp_path)  # into outputs/runs/<name>/<time>
        assert one_error(result).startswith(("error: data.batch_size", "error: resume="))
        assert not list((tmp_path / "outputs").rglob(".hydra")), refused
        assert not list((tmp_path / "outputs").rglob("train.log")), refused
    kept = tmp_path / "kept"  # a directory the user made is theirs: left as it was
    kept.mkdir()
    one_error(mtl_train(*TINY, "data.batch_size=0", f"hydra.run.dir={kept}", cwd=tmp_path))
    assert kept.is_dir()
