"""Command line: ``advbook run | build | list | new | colab-sync``.

Examples::

    advbook run                                # every chapter not up to date, profile auto, then the site
    advbook run 00 03 --profile quick          # two chapters
    advbook run 00_primer -p epochs 3 -p seed 1
    advbook run 00 -y 'eps_grid: [0.1, 0.2]'   # YAML values (lists...), as papermill's -y
    advbook run --force --jobs 2 --cell-timeout 3600
    advbook run 03 --profile full --executor slurm --partition gpu --gpus-per-job 1 --time-limit 720 --prefetch
    advbook build                              # render the site from executed chapters
    advbook list                               # chapters and their parameters
    advbook new margins --title "Logit margins"  # scaffold chapter NN_margins (notebook, methods, test, toc)
    advbook colab-sync                         # write the Colab install cell into every notebook

``-p NAME VALUE`` is typed exactly as papermill's ``-p``: ``True`` / ``False`` / ``None``,
else an int, else a float (``1e-3``), else the string (``true`` stays a string).
``-y 'YAML'`` is a YAML mapping (``-y 'eps_grid: [0.1, 0.2]'``); ``-r NAME VALUE`` is
always a string. As in papermill, ``-y`` is applied first, then ``-p``, then ``-r``.
"""

from __future__ import annotations

import argparse
import sys

from . import cluster, colab, runner, scaffold
from .params import PROFILES, ParameterError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="advbook", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="execute chapters with papermill, then build the site")
    run.add_argument("chapters", nargs="*", help="chapter ids or unique prefixes (default: all)")
    run.add_argument("--profile", default="auto", help=f"one of {', '.join(PROFILES)} (auto: full with CUDA, else quick)")
    run.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                     help="override a parameter, typed as papermill -p does (True/False/None, int, float, else string)")
    run.add_argument("-y", "--parameters-yaml", action="append", default=[], metavar="YAML",
                     help="a YAML mapping of parameters, e.g. -y 'eps_grid: [0.1, 0.2]'")
    run.add_argument("-r", "--parameter-raw", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                     help="override a parameter with VALUE as a string")
    run.add_argument("--force", action="store_true", help="re-execute chapters even when their executed copy is up to date")
    run.add_argument("--jobs", "-j", type=int, default=None,
                     help="parallel chapters after the primer (default: the number of GPUs on a CUDA machine, one chapter "
                          "per GPU; else CPU cores // ADVBOOK_THREADS, which defaults to 1)")
    run.add_argument("--cell-timeout", type=float, default=None, metavar="SECONDS",
                     help="seconds one cell may run (default per profile: "
                          + ", ".join(f"{k} {v}" for k, v in runner.CELL_TIMEOUTS.items()) + "; 0: no limit)")
    run.add_argument("--no-build", action="store_true", help="execute only; do not build the site")
    run.add_argument("--root", default=None, help="the book's root directory (default: the checkout around the cwd)")
    jobs = run.add_argument_group("on a cluster", "chapters as SLURM jobs through submitit (see README, On a cluster); "
                                  "defaults from $ADVBOOK_EXECUTOR and $ADVBOOK_SLURM_PARTITION / _ACCOUNT / _GPUS / "
                                  "_TIME / _FLAGS")
    jobs.add_argument("--executor", choices=cluster.EXECUTORS, default=None,
                      help="local: the worker pool (default); slurm: one job per chapter; "
                           "submitit-local: the same jobs as local processes")
    jobs.add_argument("--partition", default=None, help="SLURM partition")
    jobs.add_argument("--gpus-per-job", dest="gpus", type=int, default=None, help="GPUs per job (default 1 on slurm)")
    jobs.add_argument("--cpus-per-job", dest="cpus", type=int, default=None, help="CPU cores per job")
    jobs.add_argument("--mem-gb", type=float, default=None, help="memory per job in GB")
    jobs.add_argument("--time-limit", dest="time_min", type=int, default=None, metavar="MINUTES",
                      help="wall-time limit of each job (default 1440)")
    jobs.add_argument("--account", default=None, help="SLURM account to charge")
    jobs.add_argument("--sbatch", action="append", default=[], metavar="--FLAG=VALUE",
                      help="an extra sbatch flag, e.g. --sbatch=--qos=high (repeatable)")
    jobs.add_argument("--prefetch", action="store_true",
                      help="first train the reference models the chapters declare, as one array job")
    build = sub.add_parser("build", help="build the site from the executed chapters")
    build.add_argument("--root", default=None)
    lst = sub.add_parser("list", help="list chapters and their parameters")
    lst.add_argument("--root", default=None)
    sync = sub.add_parser("colab-sync", help="write the guarded Colab install cell into every source notebook "
                                             "(needs repository: url: in _config.yml)")
    sync.add_argument("--root", default=None)
    scaffold.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    root = args.root if args.root is not None else runner.default_root()
    try:
        if args.command == "new":
            return scaffold.main(args, root)
        if args.command == "run":
            overrides = runner.overrides_from_cli(args.parameters_yaml, args.parameter, args.parameter_raw)
            options = cluster.options_from_env(executor=args.executor, partition=args.partition, gpus=args.gpus,
                                               cpus=args.cpus, mem_gb=args.mem_gb, time_min=args.time_min,
                                               account=args.account, sbatch=tuple(args.sbatch), prefetch=args.prefetch)
            where = {"executor": options} if options.remote else {}  # the local pool: as before
            return runner.run(args.chapters, args.profile, overrides, root, build=not args.no_build,
                              force=args.force, jobs=args.jobs, cell_timeout_s=args.cell_timeout, **where)
        book = runner.Book(root)
        if args.command == "build":
            return runner.build_site(book)
        if args.command == "colab-sync":
            changed = colab.sync(book.root)
            repo = colab.repository(book.root)
            print(f"install cell for {repo.pip_spec()!r}: "
                  + (f"written to {', '.join(p.name for p in changed)}" if changed else "every notebook is up to date"))
            return 0
        for chapter in book.available():
            params = runner.notebook_parameters(book.notebooks / f"{chapter}.ipynb")
            print(f"{chapter}: " + ", ".join(f"{k}={v}" for k, v in params.items()))
        return 0
    except ParameterError as exc:
        print(f"advbook: error: {exc}", file=sys.stderr)
        return 2
    except colab.NoRepository as exc:  # says what to configure
        print(f"advbook: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # cluster jobs go on (advbook.cluster says how to stop them)
        return 130


if __name__ == "__main__":
    sys.exit(main())
