"""Command line: ``advbook run | build | list``.

Examples::

    advbook run                                # every chapter, profile auto, then the site
    advbook run 00 03 --profile quick          # two chapters
    advbook run 00_primer -p epochs 3 -p seed 1
    advbook build                              # render the site from executed chapters
    advbook list                               # chapters and their parameters
"""

from __future__ import annotations

import argparse
import sys

from . import runner
from .params import PROFILES, ParameterError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="advbook", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="execute chapters with papermill, then build the site")
    run.add_argument("chapters", nargs="*", help="chapter ids or unique prefixes (default: all)")
    run.add_argument("--profile", default="auto", help=f"one of {', '.join(PROFILES)} (auto: full with CUDA, else quick)")
    run.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                     help="override a notebook parameter (YAML value), e.g. -p epochs 3")
    run.add_argument("--no-build", action="store_true", help="execute only; do not build the site")
    run.add_argument("--root", default=".", help="the book's root directory")
    build = sub.add_parser("build", help="build the site from the executed chapters")
    build.add_argument("--root", default=".")
    lst = sub.add_parser("list", help="list chapters and their parameters")
    lst.add_argument("--root", default=".")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "run":
            overrides = {name: runner.parse_value(value) for name, value in args.parameter}
            return runner.run(args.chapters, args.profile, overrides, args.root, build=not args.no_build)
        book = runner.Book(args.root)
        if args.command == "build":
            return runner.build_site(book)
        for chapter in book.available():
            params = runner.notebook_parameters(book.notebooks / f"{chapter}.ipynb")
            print(f"{chapter}: " + ", ".join(f"{k}={v}" for k, v in params.items()))
        return 0
    except ParameterError as exc:
        print(f"advbook: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
