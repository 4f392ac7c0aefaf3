"""German complexity on articles the model never saw: train, then predict their sentences.

A copy of the data root is made without some TextComplexityDE articles (their rows are left
out of every file that holds their sentences: ratings, the parallel corpus, the source list
and GermEval 2022's training set; the other data sets are linked, not copied). `mtl.train`
trains on the copy (by default `experiment=complexity_best`), `mtl.predict`'s Predictor
predicts the held-out sentences, and the script prints RMSE, cubic-mapped RMSE (GermEval
2022) and Pearson beside a linear model on log(sentence length) fitted on the same training
articles, and the training time.

    MTL_DATA_ROOT=../shared/data python benchmarks/complexity_heldout.py
    python benchmarks/complexity_heldout.py --seed 1 -- 'task=[complexity_de]' data.batch_size=32
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import torch

from mtl import cli
from mtl.data.decoding import read_text
from mtl.predict import Predictor
from mtl.tasks import mapped_rmse

COMPLEXITY = {"TextComplexityDE19": "cp1252", "germeval2022_text_complexity": "utf-8"}
ARTICLE_COLUMNS = ("Article_ID", "Article ID")


def read_csv(path: Path, encoding: str) -> tuple[list[list[str]], str]:
    """Rows, and the file's line ending (kept in the copy)."""
    text = read_text(path, encoding)  # a decoding error names the file and line
    return list(csv.reader(io.StringIO(text, newline=""))), "\r\n" if "\r\n" in text else "\n"


def write_csv(path: Path, rows: list[list[str]], encoding: str, newline: str) -> None:
    buffer = io.StringIO(newline="")
    csv.writer(buffer, lineterminator=newline).writerows(rows)
    path.write_bytes(buffer.getvalue().encode(encoding))


def ratings(root: Path) -> list[dict[str, str]]:
    """TextComplexityDE's rated sentences, one dict per row."""
    rows, _ = read_csv(
        root / "TextComplexityDE19" / "ratings.csv", COMPLEXITY["TextComplexityDE19"]
    )
    return [dict(zip(rows[0], row, strict=True)) for row in rows[1:]]


def held_out_articles(rows: list[dict], count: int, seed: int) -> set[str]:
    """`count` article ids, drawn with numpy's default_rng(seed)."""
    articles = list(dict.fromkeys(r["Article_ID"] for r in rows))
    return {articles[i] for i in np.random.default_rng(seed).permutation(len(articles))[:count]}


def copy_without(root: Path, target: Path, articles: set[str], sentences: set[str]) -> None:
    """The data root without the held-out articles' rows; other data sets as links."""
    target.mkdir(parents=True)
    for entry in sorted(root.iterdir()):
        if entry.name not in COMPLEXITY:
            (target / entry.name).symlink_to(entry.resolve())
            continue
        (target / entry.name).mkdir()
        for path in sorted(entry.iterdir()):
            if path.suffix != ".csv":
                (target / entry.name / path.name).symlink_to(path.resolve())
                continue
            encoding = COMPLEXITY[entry.name]
            (header, *body), newline = read_csv(path, encoding)
            column = next((header.index(c) for c in ARTICLE_COLUMNS if c in header), None)
            if column is not None:
                body = [r for r in body if r[column] not in articles]
            elif "Sentence" in header:
                body = [r for r in body if r[header.index("Sentence")] not in sentences]
            write_csv(target / entry.name / path.name, [header, *body], encoding, newline)


def length_model(train: list[dict], texts: list[str]) -> np.ndarray:
    """Least squares on log(characters), fitted on the training articles' sentences."""
    x = np.log([len(r["Sentence"]) for r in train])
    coef = np.polyfit(x, [float(r["MOS_Complexity"]) for r in train], 1)
    return np.polyval(coef, np.log([len(t) for t in texts]))


def scores(predicted, labels) -> tuple[float, float, float]:
    p = torch.as_tensor(np.asarray(predicted), dtype=torch.float64)
    y = torch.as_tensor(labels, dtype=torch.float64)
    rmse = float((p - y).pow(2).mean().sqrt())
    pearson = float(torch.corrcoef(torch.stack([p, y]))[0, 1])
    return rmse, float(mapped_rmse(p, y)), pearson


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", default=os.environ.get("MTL_DATA_ROOT", "../shared/data"))
    parser.add_argument("--articles", type=int, default=5, help="articles held out (of 25)")
    parser.add_argument("--seed", type=int, default=0, help="which articles (numpy default_rng)")
    parser.add_argument("--out", default=None, help="default: outputs/heldout/<time>")
    parser.add_argument("--task", default="complexity_de", help="the complexity task's name")
    parser.add_argument("overrides", nargs="*", help="for mtl.train (after --)")
    args = parser.parse_args(argv)
    root = Path(args.data_root).resolve()
    out = Path(args.out or f"outputs/heldout/{datetime.now():%Y-%m-%d_%H-%M-%S}").resolve()
    if out.exists():
        sys.exit(f"error: {out} exists; choose another --out")
    rows = ratings(root)
    articles = held_out_articles(rows, args.articles, args.seed)
    test = [r for r in rows if r["Article_ID"] in articles]
    texts, labels = [r["Sentence"] for r in test], [float(r["MOS_Complexity"]) for r in test]
    print(f"held out: {len(articles)} articles ({', '.join(sorted(articles, key=int))}), "
          f"{len(texts)} sentences")  # fmt: skip
    copy_without(root, out / "data", articles, set(texts))

    overrides = args.overrides or ["experiment=complexity_best"]
    command = [sys.executable, "-m", "mtl.train", *overrides, f"hydra.run.dir={out / 'run'}"]
    print("training:", " ".join(command[1:]), flush=True)
    started = time.monotonic()
    env = os.environ | {"MTL_DATA_ROOT": str(out / "data")}
    trained = subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if trained.returncode != 0:
        sys.exit(f"{trained.stderr.decode(errors='replace')[-3000:]}\nerror: training failed")
    minutes = (time.monotonic() - started) / 60

    predicted = [
        p[args.task] for p in Predictor.load(out / "run").predict(texts, tasks=[args.task])
    ]
    reference = length_model([r for r in rows if r["Article_ID"] not in articles], texts)
    print(f"\n{'model':<34}{'RMSE':>8}{'mapped':>8}{'Pearson':>9}")
    for name, values in [("log(length), least squares", reference), ("mtl", predicted)]:
        rmse, mapped, pearson = scores(values, labels)
        print(f"{name:<34}{rmse:>8.3f}{mapped:>8.3f}{pearson:>9.3f}")
    print(f"training took {minutes:.1f} min (the process, start-up included); run: {out / 'run'}")


if __name__ == "__main__":
    cli.run(main)
