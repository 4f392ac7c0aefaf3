"""`python -m mtl.data list | fetch | verify`: the registered real data sets."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mtl.data.datasets import dataset, default_root, fetch, format_size, registry, verify
from mtl.errors import DataError

EPILOG = """\
The data root is $MTL_DATA_ROOT, else the checkout's data/ folder; a data set NAME lives in
<root>/NAME/, where the task configs look for it (${data.root}). Examples:
  python -m mtl.data list
  python -m mtl.data fetch sst2 --to ~/data && export MTL_DATA_ROOT=~/data
  python -m mtl.data fetch $(python -m mtl.data list --names) --from ../shared/data
  python -m mtl.data verify sst2 TextComplexityDE19
"""


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="python -m mtl.data",
        description="List, fetch and verify the registered data sets (mtl/data/registry/).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = root.add_subparsers(dest="command", required=True, metavar="COMMAND")
    listing = commands.add_parser("list", help="the data sets: name, files, size, licence")
    listing.add_argument("--names", action="store_true", help="print only the names, one a line")
    get = commands.add_parser(
        "fetch",
        help="download or copy data sets, checking each file's sha256",
        description="Put each file of each data set at <data root>/NAME/FILE. A file already\n"
        "there with the registered sha256 is left alone; a new copy takes its name only after\n"
        "its sha256 matched, so a failed fetch leaves no partial file.",
    )
    get.add_argument("names", nargs="+", metavar="NAME", help="registered data set names")
    get.add_argument(
        "--from", dest="source", metavar="DIR",
        help="copy from a mirror laid out as DIR/NAME/FILE (a folder or an http(s) URL) "
        "instead of downloading from the registered URLs",
    )  # fmt: skip
    get.add_argument("--to", metavar="DIR", help="the data root to fill (default: see below)")
    check = commands.add_parser(
        "verify",
        help="check that every file of data sets is present with its registered sha256",
        description="Check <data root>/NAME/FILE for each file of each data set; report every\n"
        "missing or differing file, and exit 1 if there is any.",
    )
    check.add_argument("names", nargs="+", metavar="NAME", help="registered data set names")
    check.add_argument("--from", dest="root", metavar="DIR", help="the data root to check")
    for sub in (get, check):
        sub.epilog = EPILOG
        sub.formatter_class = argparse.RawDescriptionHelpFormatter
    return root


def list_datasets(names_only: bool) -> None:
    datasets = registry().values()
    if names_only:
        print("\n".join(d.name for d in datasets))
        return
    width = max(len(d.name) for d in datasets)
    print(f"{'name':<{width}}  files  {'size':>9}  licence")
    for d in datasets:
        print(f"{d.name:<{width}}  {len(d.files):>5}  {format_size(d.size):>9}  {d.licence}")


def run(args: argparse.Namespace) -> None:
    if args.command == "list":
        list_datasets(args.names)
        return
    names = [dataset(name).name for name in args.names]  # every name is known before any work
    if args.command == "fetch":
        to = Path(args.to).resolve() if args.to else default_root()
        for name in names:
            fetch(name, args.source, to, report=print)
        print(f"done: {len(names)} data set(s) in {to}; set MTL_DATA_ROOT={to} to train on them")
        return
    root = args.root or default_root()
    problems = [p for name in names for p in verify(name, root, report=print)]
    if problems:
        raise DataError(
            f"{len(problems)} file(s) missing or different under {root}: "
            f"{'; '.join(problems)}. Fetch them again: python -m mtl.data fetch "
            f"{' '.join(names)} --to {root}"
        )
    print(f"ok: every file of {len(names)} data set(s) matches the registry")


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    try:
        run(args)
    except DataError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
