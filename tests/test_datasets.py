"""The data set registry, `python -m mtl.data` and the readers of mtl/data/formats.py."""

import dataclasses
import hashlib
import shutil
import subprocess
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from commands import run

from mtl.data import datasets, formats, readers
from mtl.data.datasets import fetch, registry, verify
from mtl.errors import DataError

REGISTRY = registry()
SMALL = "germeval2022_text_complexity"  # 210 KiB: the set served over HTTP


def cli(*args: str) -> subprocess.CompletedProcess:
    """`python -m mtl.data args...` (in this process: see commands.py)."""
    return run("mtl.data", *args, cwd=Path.cwd())


def leftovers(folder: Path) -> list[Path]:
    """Temporary files (hidden names) anywhere under `folder`."""
    return list(folder.rglob(".*"))


def corrupt(path: Path, offset: int = 10) -> None:
    """Change one byte of `path` (copies of the read-only shared files are writable)."""
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def fetched(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every registered data set fetched from the shared data through the CLI."""
    to = tmp_path_factory.mktemp("fetched")
    result = cli("fetch", *REGISTRY, "--from", str(shared_data), "--to", str(to))
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("fetched ") == sum(len(d.files) for d in REGISTRY.values())
    return to


# --- the registry ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_registry_matches_the_shared_files(shared_data: Path, name: str) -> None:
    ds = REGISTRY[name]
    folder = shared_data / name
    on_disk = {p.name for p in folder.iterdir()} - {"SOURCE.md"}
    assert {f.path for f in ds.files} == on_disk  # every data and licence file, nothing else
    for file in ds.files:
        data = (folder / file.path).read_bytes()
        assert (len(data), hashlib.sha256(data).hexdigest()) == (file.size, file.sha256), file.path
        assert file.url.startswith("https://"), file.url
    assert all([ds.title, ds.description, ds.licence, ds.citation, ds.homepage])


def task_records(folder: Path, task: dict) -> Iterator[tuple[str, dict]]:
    """(file name, values) of every row of a registered task's files, read as it says."""
    names = [task["file"]] if "file" in task else list(task["files"].values())
    for name in names:
        path, fmt, encoding = folder / name, task["format"], task["encoding"]
        if fmt == "parallel_lines":
            records = formats.read_parallel_lines(path, encoding)
        elif fmt == "aligned_pairs":
            records = formats.read_aligned_pairs(path, encoding)
        else:
            records = readers.iter_records(path, fmt, readers.read_text(path, encoding))
            next(records)  # the header
        for line, values, problem in records:
            assert problem is None, f"{path}:{line}: {problem}"
            yield name, values


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_registered_tasks_read_their_files(shared_data: Path, name: str) -> None:
    ds = REGISTRY[name]
    registered = {f.path for f in ds.files}
    for task_name, task in ds.tasks.items():
        columns = [task.get(k) for k in ("text_column", "text_pair_column", "group_column")]
        label = task.get("label_column")
        rows = 0
        for file, values in task_records(shared_data / name, task):
            assert file in registered
            for column in [c for c in columns if c]:
                assert values.get(column), (task_name, file, column, values)
            if "labels" in task:
                assert values[label] in task["labels"], (task_name, file, values)
            if "range" in task:
                low, high = task["range"]
                assert low <= float(values[label]) <= high, (task_name, file, values)
            rows += 1
        assert rows > 0, task_name
        assert len(task.get("label_names", task.get("labels", []))) == len(task.get("labels", []))


# --- fetch and verify through the CLI ----------------------------------------------------


def test_cli_list() -> None:
    result = cli("list")
    assert result.returncode == 0, result.stderr
    assert "name" in result.stdout and "CC BY-SA 4.0" in result.stdout
    assert cli("list", "--names").stdout.split() == list(REGISTRY)


def test_cli_fetch_lays_out_every_file_and_verify_passes(fetched: Path) -> None:
    for ds in REGISTRY.values():
        for file in ds.files:
            assert (fetched / ds.name / file.path).stat().st_size == file.size
    assert leftovers(fetched) == []
    result = cli("verify", *REGISTRY, "--from", str(fetched))
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("verified ") == sum(len(d.files) for d in REGISTRY.values())


def test_cli_fetch_leaves_present_files_alone(fetched: Path, shared_data: Path) -> None:
    result = cli("fetch", "sst2", "--from", str(shared_data), "--to", str(fetched))
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("already present ") == len(REGISTRY["sst2"].files)


def test_cli_rejects_a_changed_byte(fetched: Path, tmp_path: Path) -> None:
    mirror = tmp_path / "mirror"
    shutil.copytree(fetched / SMALL, mirror / SMALL)
    corrupt(mirror / SMALL / "validation_set.csv")
    (mirror / SMALL / "final_test_set.csv").unlink()

    result = cli("verify", SMALL, "--from", str(mirror))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1
    assert result.stderr.startswith("error: 2 file(s) missing or different")
    assert "validation_set.csv: sha256" in result.stderr
    assert "final_test_set.csv: missing" in result.stderr  # every bad file, not only the first

    to = tmp_path / "to"
    result = cli("fetch", SMALL, "--from", str(mirror), "--to", str(to))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    expected = next(f.sha256 for f in REGISTRY[SMALL].files if f.path == "validation_set.csv")
    assert "validation_set.csv" in result.stderr and expected in result.stderr
    assert "re-download it or check the source" in result.stderr
    assert sorted(p.name for p in (to / SMALL).iterdir()) == ["training_set.csv"]  # no temp


def test_cli_unknown_name_and_usage_errors() -> None:
    result = cli("verify", "no_such_set")
    assert result.returncode == 1
    assert result.stderr.startswith("error: unknown data set 'no_such_set'")
    assert all(name in result.stderr for name in REGISTRY)
    assert cli("fetch").returncode == 2


# --- downloads over HTTP ---------------------------------------------------------------------


@pytest.fixture
def server(shared_data: Path, tmp_path: Path) -> Iterator[tuple[str, Path, type]]:
    """A local HTTP mirror of one small data set: (base URL, its folder, handler class)."""
    mirror = tmp_path / "mirror"
    shutil.copytree(shared_data / SMALL, mirror / SMALL)

    class Handler(SimpleHTTPRequestHandler):
        drop = False  # send half of each file, then close the connection

        def log_message(self, *args) -> None:
            pass

        def copyfile(self, source, outputfile) -> None:
            if not self.drop:
                return super().copyfile(source, outputfile)
            data = source.read()
            outputfile.write(data[: len(data) // 2])
            self.close_connection = True

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(mirror)))
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", mirror / SMALL, Handler
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def served_urls(server, monkeypatch) -> None:
    """The registry with the small set's URLs pointing at the local server."""
    base, _, _ = server
    ds = REGISTRY[SMALL]
    files = tuple(dataclasses.replace(f, url=f"{base}/{SMALL}/{f.path}") for f in ds.files)
    monkeypatch.setattr(datasets, "registry", lambda: {SMALL: dataclasses.replace(ds, files=files)})


def test_download_verifies_and_renames(served_urls, tmp_path: Path) -> None:
    lines: list[str] = []
    folder = fetch(SMALL, to=tmp_path / "out", report=lines.append)
    assert folder == tmp_path / "out" / SMALL
    assert [line.split()[0] for line in lines] == ["fetched"] * len(REGISTRY[SMALL].files)
    assert verify(SMALL, tmp_path / "out") == []
    assert leftovers(tmp_path / "out") == []


def test_download_from_an_http_mirror(server, tmp_path: Path) -> None:
    base, _, _ = server
    fetch(SMALL, source=base + "/", to=tmp_path / "out")
    assert verify(SMALL, tmp_path / "out") == []


def test_corrupted_download_leaves_nothing(served_urls, server, tmp_path: Path) -> None:
    _, mirror, _ = server
    corrupt(mirror / "training_set.csv")
    expected = next(f.sha256 for f in REGISTRY[SMALL].files if f.path == "training_set.csv")
    actual = hashlib.sha256((mirror / "training_set.csv").read_bytes()).hexdigest()
    with pytest.raises(DataError, match="training_set.csv") as error:
        fetch(SMALL, to=tmp_path / "out")
    assert expected in str(error.value) and actual in str(error.value)
    assert "retry" in str(error.value)
    assert list((tmp_path / "out").rglob("*")) == [tmp_path / "out" / SMALL]  # no file, no temp


def test_dropped_connection_leaves_nothing(served_urls, server, tmp_path: Path) -> None:
    _, _, handler = server
    handler.drop = True
    with pytest.raises(DataError, match=r"training_set.csv: sha256 \w+ \(82006 bytes\)"):
        fetch(SMALL, to=tmp_path / "out")
    assert list((tmp_path / "out").rglob("*")) == [tmp_path / "out" / SMALL]


def test_missing_file_on_the_server(server, tmp_path: Path) -> None:
    base, mirror, _ = server
    (mirror / "validation_set.csv").unlink()
    with pytest.raises(DataError, match=r"validation_set.csv: download failed \(HTTP Error 404"):
        fetch(SMALL, source=base, to=tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out" / SMALL).iterdir()) == ["training_set.csv"]


# --- the readers of mtl/data/formats.py -------------------------------------------------


def test_umsab_parallel_lines(shared_data: Path) -> None:
    folder = shared_data / "umsab_german_sentiment"
    for split, rows in {"train": 1839, "val": 324, "test": 870}.items():
        records = list(formats.read_parallel_lines(folder / f"{split}_text.txt"))
        assert len(records) == rows
        assert [r[0] for r in records] == list(range(1, rows + 1))
        assert all(problem is None for _, _, problem in records)
        assert {values["label"] for _, values, _ in records} == {"0", "1", "2"}
    first = (folder / "train_text.txt").read_text(encoding="utf-8").split("\n")[0]
    train = formats.read_parallel_lines(folder / "train_text.txt")
    assert next(train) == (1, {"text": first.strip(), "label": "0"}, None)


def test_parallel_lines_bad_inputs(tmp_path: Path) -> None:
    text, labels = tmp_path / "x_text.txt", tmp_path / "x_labels.txt"
    text.write_text("gut\n\nschlecht\n", encoding="utf-8")  # a final newline ends the last line
    labels.write_text("2\n1\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"x_text.txt has 3 lines but .*x_labels.txt has 2"):
        list(formats.read_parallel_lines(text))
    labels.write_text("2\n1\n ", encoding="utf-8")
    assert list(formats.read_parallel_lines(text)) == [
        (1, {"text": "gut", "label": "2"}, None),
        (2, {"text": "", "label": "1"}, "empty line in x_text.txt"),
        (3, {"text": "schlecht", "label": ""}, "empty line in x_labels.txt"),
    ]
    other, other_labels = tmp_path / "tweets.txt", tmp_path / "gold.txt"
    other.write_text("gut", encoding="utf-8")
    with pytest.raises(DataError, match="without '_text'"):
        list(formats.read_parallel_lines(other))
    other_labels.write_text("2", encoding="utf-8")
    assert list(formats.read_parallel_lines(other, label_path=other_labels)) == [
        (1, {"text": "gut", "label": "2"}, None)
    ]


def test_onestopenglish_aligned_pairs(shared_data: Path) -> None:
    folder = shared_data / "onestopenglish_sentence_aligned"
    counts = {"ADV-ELE": 2166, "ADV-INT": 2154, "ELE-INT": 1674}  # as in SOURCE.md
    for stem, pairs in counts.items():
        records = list(formats.read_aligned_pairs(folder / f"{stem}.txt"))
        assert len(records) == pairs
        assert all(problem is None for _, _, problem in records)
        assert [r[0] for r in records[:3]] == [1, 4, 7]  # blocks of two lines and a separator
        assert all(v["text"] != v["text_pair"] for _, v, _ in records)
    lines = (folder / "ADV-ELE.txt").read_text(encoding="ascii").split("\n")
    first = next(formats.read_aligned_pairs(folder / "ADV-ELE.txt"))  # the simpler line first
    assert first == (
        1,
        {
            "text": lines[1].strip(),
            "text_pair": lines[0].strip(),
            "text_level": "elementary",
            "text_pair_level": "advanced",
        },
        None,
    )


def test_aligned_pairs_bad_inputs(tmp_path: Path) -> None:
    path = tmp_path / "ELE-INT.txt"
    path.write_text(
        "easy one\nharder one  \n*******\n"  # a good block (lines 1-3)
        "only one line\n*******\n"  # line 4: one sentence
        "*******\n"  # line 6: an empty block
        "a\nb\nc\n*******\n"  # lines 7-10: three sentences
        "\neasy two\n\nharder two\n",  # lines 11-14: blank lines ignored, no final separator
        encoding="utf-8",
    )
    records = list(formats.read_aligned_pairs(path))
    assert [(line, problem is None) for line, _, problem in records] == [
        (1, True), (4, False), (6, False), (7, False), (12, True),
    ]  # fmt: skip
    assert records[0][1] == {
        "text": "easy one",
        "text_pair": "harder one",
        "text_level": "elementary",
        "text_pair_level": "intermediate",
    }
    assert records[3][2] == (
        "a block of 3 non-blank lines ending at line 10, expected 2 (a sentence at each level)"
    )
    assert records[4][1]["text_pair"] == "harder two"
    bad_name = tmp_path / "pairs.txt"
    shutil.copy(path, bad_name)
    with pytest.raises(DataError, match="cannot tell the two levels from the file name"):
        list(formats.read_aligned_pairs(bad_name))
