"""Command line: ``advbook run | build | list | new | colab-sync | cache``.

Examples::

    advbook run                                # every chapter not up to date, profile auto, then the site
    advbook run 00 03 --profile quick          # two chapters
    advbook run 00_primer -p epochs 3 -p seed 1
    advbook run 00 -y 'eps_grid: [0.1, 0.2]'   # YAML values (lists...), as papermill's -y
    advbook run --force --jobs 2 --cell-timeout 3600
    advbook run 03 --profile full --executor slurm --partition gpu --gpus-per-job 1 --time-limit 720 --prefetch
    advbook build                              # render the site from executed chapters
    advbook list                               # every chapter's parameters: doc, bounds, value per profile
    advbook list 03                            # one chapter's
    advbook new margins --title "Logit margins"  # scaffold chapter NN_margins (notebook, methods, test, toc)
    advbook colab-sync                         # write the Colab install cell into every notebook
    advbook cache pack --profile quick         # the chapters' reference models as a tarball, for a class
    advbook cache import advbook-cache-quick-reference.tar.gz   # checked before anything is written

``-p NAME VALUE`` is typed exactly as papermill's ``-p``: ``True`` / ``False`` / ``None``,
else an int, else a float (``1e-3``), else the string (``true`` stays a string).
``-y 'YAML'`` is a YAML mapping (``-y 'eps_grid: [0.1, 0.2]'``); ``-r NAME VALUE`` is
always a string. As in papermill, ``-y`` is applied first, then ``-p``, then ``-r``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .. import profiles
from ..paths import Book, repo_root
from . import build, cluster, colab, scaffold, site, student
from ..params import ParameterError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="advbook", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="execute chapters with papermill, then build the site")
    run.add_argument("chapters", nargs="*", help="chapter ids or unique prefixes (default: all)")
    run.add_argument("--profile", default="auto", help=f"one of {', '.join(profiles.NAMES)} (auto: full with CUDA, else quick)")
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
                          + ", ".join(f"{p.name} {p.cell_timeout}" for p in profiles.PROFILES.values())
                          + "; 0: no limit)")
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
    lst = sub.add_parser("list", help="list chapters and their parameters (doc, allowed values, value per profile)")
    lst.add_argument("chapters", nargs="*", help="chapter ids or unique prefixes (default: all)")
    lst.add_argument("--root", default=None)
    sync = sub.add_parser("colab-sync", help="write the guarded Colab install cell into every source notebook "
                                             "(needs repository: url: in _config.yml)")
    sync.add_argument("--root", default=None)
    cache = sub.add_parser("cache", help="share a warmed cache: pack entries into a tarball, import one")
    cache_sub = cache.add_subparsers(dest="cache_command", required=True)
    pack = cache_sub.add_parser("pack", help="write the chapters' reference models (or --all entries) to a tarball")
    pack.add_argument("--all", action="store_true", help="every intact entry of the cache, not only the reference models")
    pack.add_argument("--profile", default="auto", help="whose reference models (auto: full with CUDA, else quick)")
    pack.add_argument("-o", "--output", default=None,
                      help="the tarball (default advbook-cache-<profile>-reference.tar.gz, or -all.tar.gz)")
    pack.add_argument("--cache", default=None, help="the cache folder (default $ADVBOOK_CACHE, else .cache/advbook)")
    pack.add_argument("--root", default=None)
    imp = cache_sub.add_parser("import", help="import a tarball written by 'advbook cache pack', after checking it")
    imp.add_argument("file")
    imp.add_argument("--cache", default=None, help="the cache folder (default $ADVBOOK_CACHE, else .cache/advbook)")
    imp.add_argument("--root", default=None)
    scaffold.add_parser(sub)
    student.add_parser(sub)
    return parser


def cache_command(args, root) -> int:
    """``advbook cache pack`` / ``advbook cache import`` (:mod:`advbook.book.cachepack`)."""
    from . import cachepack
    from ..paths import cache_root

    folder = Path(args.cache) if args.cache else cache_root()
    if args.cache_command == "import":
        try:
            done = cachepack.import_tarball(args.file, folder)
        except cachepack.ImportRefused as exc:
            print(f"advbook: error: {args.file}: {exc}", file=sys.stderr)
            return 1
        print(f"imported {len(done['added'])} entr{'y' if len(done['added']) == 1 else 'ies'} into {folder} "
              f"({len(done['kept'])} already there, kept); packed by advbook {done['library']}: {done['selection']}")
        return 0
    profile = profiles.resolve(args.profile)
    if args.all:
        stems, selection, notes = cachepack.all_stems(folder), "every intact entry", []
    else:
        found = cachepack.reference_stems(profile, root)
        stems, notes = list(found.stems), found.skipped
        selection = f"the reference models the chapters declare at profile {profile}"
    output = args.output or ("advbook-cache-all.tar.gz" if args.all else f"advbook-cache-{profile}-reference.tar.gz")
    packed = cachepack.pack(output, stems, folder, selection)
    size = Path(output).stat().st_size
    print(f"{output}: {len(packed['entries'])} entr{'y' if len(packed['entries']) == 1 else 'ies'} "
          f"({size / 2**20:.1f} MiB), {selection}")
    for note in notes:
        print(f"  not listed: {note}")
    if packed["missing"]:
        print(f"  {len(packed['missing'])} not in the cache yet (run the chapters first, e.g. make book "
              f"PROFILE={profile}): " + ", ".join(packed["missing"][:8]) + (" ..." if len(packed["missing"]) > 8 else ""))
    return 0 if packed["entries"] else 1


COMMON_DOCS = {
    "profile": "whose defaults fill every None: auto = full with CUDA, else quick",
    "device": "auto = cuda when available, else cpu",
    "seed": "seeds torch, numpy and random before any work (chapter.setup)",
    "dataset": "None: the profile's",
}
"""What a shared parameter (:data:`advbook.params.COMMON`) means where a notebook's parameters cell says nothing."""


def _value(value) -> str:
    """A profile value as ``advbook list`` prints it: radii that are k/255 say so, floats in 4 digits."""
    if isinstance(value, bool) or value is None:
        return repr(value)
    if isinstance(value, float):
        k = value * 255
        text = f"{value:.4g}"
        if 0 < value < 1 and abs(k - round(k)) < 1e-9 and float(text) != value:
            text += f" ({round(k)}/255)"
        return text
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, str):
        return repr(value)
    return str(value)


def parameter_table(book: Book, chapter: str) -> list[dict]:
    """One row per parameter of ``chapter``: ``name``, ``doc`` (its one line in the module's ``PARAMETERS``
    declaration, else the parameters cell's comment, else :data:`COMMON_DOCS`), ``allowed`` (its spec in the methods module's ``SCHEMA`` or in
    :data:`advbook.params.COMMON`), ``default`` (the notebook's value) and ``profiles``, the value each of
    the module's ``PROFILES`` gives it (``epochs`` / ``eps`` left to the reference models' recipe, for a
    module that lists them in ``RECIPE_OVERRIDES``, show the recipe's value)."""
    import papermill

    from .. import methods
    from ..params import COMMON

    module = methods.for_chapter(chapter)
    spec = {**COMMON, **getattr(module, "SCHEMA", {})}
    chapter_profiles = getattr(module, "PROFILES", {})
    recipe_names = set(getattr(module, "RECIPE_OVERRIDES", ()))
    declared = module.PARAMETERS.docs if hasattr(module, "PARAMETERS") else {}
    rows = []
    for name, cell in papermill.inspect_notebook(str(book.notebooks / f"{chapter}.ipynb")).items():
        values = {}
        for profile, defaults in chapter_profiles.items():
            if name == "profile":
                continue
            if name in defaults and defaults[name] is None and name in recipe_names:
                values[profile] = _recipe_value(name, profile, defaults.get("dataset"))
            elif name in defaults:
                values[profile] = _value(defaults[name])
        rows.append({"name": name, "doc": declared.get(name) or cell.get("help") or COMMON_DOCS.get(name, ""),
                     "allowed": spec[name].describe() if name in spec else "not validated (not in SCHEMA)",
                     "default": cell["default"], "profiles": values})
    return rows


def _recipe_value(name: str, profile: str, dataset: str | None) -> str:
    try:
        recipe = profiles.PROFILES[profile].recipe(dataset)
    except (KeyError, ValueError):
        return "None (the recipe)"
    if name == "epochs":
        return f"recipe: standard {recipe['std_epochs']}, AT {recipe['at_epochs']}"
    return f"recipe: {_value(recipe['eps'])}"


def profiles_of(book: Book, chapter: str) -> list[str]:
    """The profiles the chapter's methods module defines (``PROFILES``), in its order."""
    from .. import methods

    return list(getattr(methods.for_chapter(chapter), "PROFILES", {}))


def describe_chapter(book: Book, chapter: str) -> str:
    """``advbook list``'s text for one chapter: each parameter with its doc, what it allows and its
    value under each profile (``notebook NAME = VALUE`` where no profile sets it)."""
    from .. import methods

    rows = parameter_table(book, chapter)
    module = methods.for_chapter(chapter).__name__
    width = max(len(r["name"]) for r in rows) + 2
    pad = " " * (width + 2)
    lines = [f"{chapter}  (notebooks/{chapter}.ipynb; profiles and bounds from {module})"]
    for r in rows:
        lines.append(f"  {r['name']:<{width}}{r['doc'] or '(no description in the parameters cell)'}")
        lines.append(f"{pad}allowed: {r['allowed']}")
        groups: dict[str, list[str]] = {}  # profiles that give the same value, in the module's order
        for profile, value in r["profiles"].items():
            groups.setdefault(value, []).append(profile)
        if r["name"] == "profile":
            lines.append(f"{pad}the notebook's profile = {r['default']}; this chapter defines "
                         + ", ".join(profiles_of(book, chapter)))
        elif len(groups) == 1 and len(r["profiles"]) == len(profiles_of(book, chapter)):
            lines.append(f"{pad}every profile: {next(iter(groups))}")
        elif groups:
            lines.append(pad + " | ".join(f"{', '.join(ps)}: {v}" for v, ps in groups.items()))
        else:
            lines.append(f"{pad}every profile: the notebook's {r['name']} = {r['default']}")
    return "\n".join(lines + claim_lines(methods.for_chapter(chapter)))


def claim_lines(module) -> list[str]:
    """``advbook list``'s claims part: each claim the module declares (``CLAIMS``), what it says, its unit of
    replication and how many replicates each profile runs (:meth:`advbook.protocol.Claim.planned`)."""
    claims = getattr(module, "CLAIMS", {})
    if not claims:
        return []
    width = max(len(key) for key in claims) + 2
    pad = " " * (width + 2)
    lines = [f"claims (declared in {module.__name__}.CLAIMS before anything is measured)"]
    for key, claim in claims.items():
        planned = claim.planned(getattr(module, "PROFILES", {}))
        lines.append(f"  {key:<{width}}{claim.text}")
        lines.append(f"{pad}replicates: {claim.unit}s (parameter {claim.replicates}): "
                     + " | ".join(f"{profile} {n}" for profile, n in planned.items()))
    return lines


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    root = args.root if args.root is not None else repo_root()
    try:
        if args.command == "new":
            return scaffold.main(args, root)
        if args.command == "run":
            overrides = build.overrides_from_cli(args.parameters_yaml, args.parameter, args.parameter_raw)
            options = cluster.options_from_env(executor=args.executor, partition=args.partition, gpus=args.gpus,
                                               cpus=args.cpus, mem_gb=args.mem_gb, time_min=args.time_min,
                                               account=args.account, sbatch=tuple(args.sbatch), prefetch=args.prefetch)
            where = {"executor": options} if options.remote else {}  # the local pool: as before
            return build.run(args.chapters, args.profile, overrides, root, build=not args.no_build,
                              force=args.force, jobs=args.jobs, cell_timeout_s=args.cell_timeout, **where)
        if args.command == "cache":
            return cache_command(args, root)
        if args.command == "student":
            return student.main(args=args)
        book = Book(root)
        if args.command == "build":
            return site.build_site(book)
        if args.command == "colab-sync":
            changed = colab.sync(book.root)
            repo = colab.repository(book.root)
            print(f"install cell for {repo.pip_spec()!r}: "
                  + (f"written to {', '.join(p.name for p in changed)}" if changed else "every notebook is up to date"))
            return 0
        print("\n\n".join(describe_chapter(book, chapter) for chapter in build.select(book, args.chapters)))
        return 0
    except ParameterError as exc:
        print(f"advbook: error: {exc}", file=sys.stderr)
        return 2
    except colab.NoRepository as exc:  # says what to configure
        print(f"advbook: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # cluster jobs go on (advbook.book.cluster says how to stop them)
        return 130


if __name__ == "__main__":
    sys.exit(main())
