"""Share a warmed cache with a class: pack cache entries into a tarball, import one safely.

A course that uses the book trains the reference models once (``make book`` on one machine)
and hands the students a tarball instead of letting 30 laptops each retrain them:

    make cache-pack                     # the reference models every chapter declares, at PROFILE
    make cache-pack ALL=1               # every complete entry of the cache
    make cache-unpack FILE=advbook-cache-quick-reference.tar.gz

(``advbook cache pack [--all] [--profile P] [-o FILE]`` and ``advbook cache import FILE``.)

**What is packed.** By default the reference models that the chapters' methods modules declare
(``REFERENCE_MODELS``, the list ``advbook run --prefetch`` trains: the primer's standard and
adversarially trained pair for every training seed, and the other chapters' extra seeds), each
at the cache key the chapter will ask for: the key is computed by the same code path a chapter
takes (:func:`advbook.zoo.reference_model` with the chapter's data split, recipe and code digest),
stopped before anything is trained. ``--all`` packs every entry that has both its files and
passes its checksum. An entry is a payload ``<name>-<key>.pt`` and its manifest ``<name>-<key>.json``
(:mod:`advbook.cache`); the tarball holds them under ``advbook-cache/entries/`` and a
``advbook-cache/MANIFEST.json`` with the SHA-256 and size of every file.

**What an import refuses** (:class:`ImportRefused`, before anything is written to the cache):
a member that is not a regular file or whose path is not ``advbook-cache/MANIFEST.json`` or
``advbook-cache/entries/<name>-<16 hex digits>.pt|.json`` (absolute paths, ``..``, links,
devices), a duplicate member, a file not listed in the tarball's manifest or listed but absent,
a size or SHA-256 that differs from the manifest, an entry missing one of its two files, and an
entry whose own manifest does not match its payload's checksum, its key or its name. The files
are read out of the tarball (never extracted by ``tarfile``) into a temporary folder inside the
cache, checked, and only then moved into place, one entry at a time under the entry's lock,
payload first and manifest last (as :func:`advbook.cache.save` writes them), by atomic rename.
An entry the cache already holds intact is kept as it is.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import tarfile
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from .. import __version__

PREFIX = "advbook-cache"
MANIFEST = f"{PREFIX}/MANIFEST.json"
FORMAT = 1
STEM = re.compile(r"^(?P<name>[A-Za-z0-9_-]+)-(?P<key>[0-9a-f]{16})$")
MEMBER = re.compile(rf"^{PREFIX}/entries/(?P<stem>[A-Za-z0-9_-]+-[0-9a-f]{{16}})\.(?P<ext>pt|json)$")
_CHUNK = 1 << 20


class ImportRefused(ValueError):
    """A cache tarball that could corrupt the cache or is not what its manifest says; nothing was written."""


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _cache_root(root: str | os.PathLike | None) -> Path:
    from ..paths import cache_root

    path = Path(root) if root is not None else cache_root()
    path.mkdir(parents=True, exist_ok=True)
    return path


def intact(root: Path, stem: str) -> bool:
    """Whether entry ``stem`` has both files, a readable manifest and a payload that matches its checksum."""
    payload, manifest = root / f"{stem}.pt", root / f"{stem}.json"
    if not payload.is_file() or not manifest.is_file():
        return False
    try:
        recorded = json.loads(manifest.read_text()).get("sha256")
    except (OSError, ValueError, AttributeError):
        return False
    return recorded == _sha256_file(payload)


# --- which entries ----------------------------------------------------------------------------

def all_stems(root: Path) -> list[str]:
    """Every entry of the cache at ``root`` with both files and a matching checksum."""
    stems = sorted(p.stem for p in root.glob("*.json") if STEM.match(p.stem))
    return [s for s in stems if intact(root, s)]


@dataclass
class Reference:
    """The reference models the chapters declare at one profile: their entries, and what could not be listed."""

    stems: dict[str, list[str]] = field(default_factory=dict)  # stem -> labels of the chapters' models
    skipped: list[str] = field(default_factory=list)  # "chapter: why"


class _Found(Exception):
    def __init__(self, stem: str):
        super().__init__(stem)
        self.stem = stem


def reference_stems(profile: str, book_root: str | os.PathLike | None = None,
                    chapters: Iterable[str] | None = None) -> Reference:
    """The cache entries of the reference models every chapter (or ``chapters``) declares at ``profile``.

    For each model of :func:`advbook.book.cluster.reference_entries` this loads the chapter's data split
    and calls :func:`advbook.zoo.reference_model` with :func:`advbook.cache.entry` replaced by a probe
    that computes the entry's key (name, configuration, code digest, thread count, as ``entry`` does)
    and stops: the key is the one the chapter asks for, and nothing is trained.
    """
    from .. import cache, codehash, data, profiles, runtime, zoo
    from . import build, cluster
    from ..paths import Book, repo_root

    profile = profiles.resolve(profile)
    book = Book(Path(book_root) if book_root is not None else repo_root())
    found = Reference()
    device = runtime.resolve_device("cpu")  # also sets the thread count, which is part of the key
    loaded: dict[tuple, object] = {}

    def probe(name, config, code, map_location="cpu"):
        digest = codehash.digest_of(codehash.code_identity(*code))
        raise _Found(cache._paths(name, config, digest)[0].stem)

    for chapter in build.select(book, chapters):
        try:
            items, why = cluster.reference_entries(book.notebooks / f"{chapter}.ipynb", chapter, {"profile": profile})
        except Exception as exc:  # a chapter whose parameters do not resolve at this profile
            items, why = [], f"{exc.__class__.__name__}: {exc}"
        if not items:
            found.skipped.append(f"{chapter}: {why or 'declares no reference model'}")
            continue
        for item in items:
            split = (item["dataset"], item["n_train"], item["n_test"], item["data_seed"])
            if split not in loaded:
                try:
                    loaded[split] = data.load(item["dataset"], device=device, n_train=item["n_train"],
                                              n_test=item["n_test"], seed=item["data_seed"])
                except Exception as exc:  # e.g. CIFAR-10 not downloaded: its keys need its fingerprint
                    loaded[split] = exc
            ds = loaded[split]
            if isinstance(ds, Exception):
                found.skipped.append(f"{chapter}: {cluster.entry_label(item)} ({item['dataset']} not available: "
                                     f"{ds.__class__.__name__})")
                continue
            original = cache.entry
            cache.entry = probe
            try:
                zoo.reference_model(ds, item["recipe"], item["kind"], item["seed"], item.get("tag", ""))
            except _Found as hit:
                found.stems.setdefault(hit.stem, []).append(f"{chapter}: {cluster.entry_label(item)}")
            finally:
                cache.entry = original
    return found


# --- pack -------------------------------------------------------------------------------------

def pack(output: str | os.PathLike, stems: Iterable[str], root: str | os.PathLike | None = None,
         selection: str = "") -> dict:
    """Write the entries ``stems`` of the cache at ``root`` to the gzipped tarball ``output``, with a
    manifest (format, library version, date, selection, and each file's SHA-256 and size). Entries
    that are not intact are left out and named. Returns the manifest (with ``missing``)."""
    root = _cache_root(root)
    output = Path(output)
    entries, missing = [], []
    for stem in dict.fromkeys(stems):
        if not STEM.match(stem) or not intact(root, stem):
            missing.append(stem)
            continue
        files = {}
        for ext in ("pt", "json"):
            path = root / f"{stem}.{ext}"
            files[f"{stem}.{ext}"] = {"sha256": _sha256_file(path), "size": path.stat().st_size}
        entries.append({"stem": stem, "name": STEM.match(stem)["name"], "files": files})
    manifest = {"format": FORMAT, "library": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "selection": selection, "entries": entries}
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with tarfile.open(tmp, "w:gz") as tar:
            blob = json.dumps(manifest, indent=1).encode()
            info = tarfile.TarInfo(MANIFEST)
            info.size, info.mtime, info.mode = len(blob), int(time.time()), 0o644
            tar.addfile(info, io.BytesIO(blob))
            for entry in entries:
                for filename in entry["files"]:
                    path = root / filename
                    info = tarfile.TarInfo(f"{PREFIX}/entries/{filename}")
                    info.size, info.mtime, info.mode = path.stat().st_size, int(path.stat().st_mtime), 0o644
                    with open(path, "rb") as fh:
                        tar.addfile(info, fh)
        os.replace(tmp, output)
    finally:
        tmp.unlink(missing_ok=True)
    return {**manifest, "missing": missing}


# --- import -----------------------------------------------------------------------------------

def _refuse(why: str) -> None:
    raise ImportRefused(f"refused: {why}; nothing was written to the cache")


def _read_checked(tar: tarfile.TarFile, files: dict) -> tuple[dict, dict]:
    """Check every member's type and path; return ``(manifest, members by file name)``."""
    members, manifest_member = {}, None
    for member in tar.getmembers():
        if member.isdir() and member.name.rstrip("/") in (PREFIX, f"{PREFIX}/entries"):
            continue
        if not member.isfile():
            _refuse(f"{member.name!r} is not a regular file (links and devices are not allowed)")
        if member.name == MANIFEST:
            if manifest_member is not None:
                _refuse(f"{MANIFEST} appears twice")
            manifest_member = member
            continue
        match = MEMBER.match(member.name)
        if match is None:
            _refuse(f"{member.name!r} is not a cache entry file ({PREFIX}/entries/<name>-<key>.pt|.json)")
        filename = member.name.rsplit("/", 1)[1]
        if filename in members:
            _refuse(f"{member.name!r} appears twice")
        members[filename] = member
    if manifest_member is None:
        _refuse(f"no {MANIFEST}")
    try:
        manifest = json.loads(tar.extractfile(manifest_member).read(4 << 20))
        entries = manifest["entries"]
        listed = {name: spec for e in entries for name, spec in e["files"].items()}
        if not all(isinstance(e, dict) for e in entries):
            raise TypeError("an entry is not an object")
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        _refuse(f"{MANIFEST} is unreadable ({exc.__class__.__name__})")
    if not all(isinstance(spec, dict) and isinstance(spec.get("size"), int) and isinstance(spec.get("sha256"), str)
               for spec in listed.values()):
        _refuse(f"{MANIFEST} does not give every file a size and a SHA-256")
    if manifest.get("format") != FORMAT:
        _refuse(f"format {manifest.get('format')!r} is not {FORMAT}")
    if set(listed) != set(members):
        extra, absent = sorted(set(members) - set(listed)), sorted(set(listed) - set(members))
        _refuse(f"files and manifest differ (not listed: {extra[:3]}, listed but absent: {absent[:3]})")
    for entry in entries:
        stem = entry.get("stem", "")
        if not STEM.match(stem) or set(entry["files"]) != {f"{stem}.pt", f"{stem}.json"}:
            _refuse(f"entry {stem!r} does not have exactly its two files {stem}.pt and {stem}.json")
    files.update(listed)
    return manifest, members


def _copy_member(tar: tarfile.TarFile, member: tarfile.TarInfo, spec: dict, dest: Path) -> None:
    """Copy one member to ``dest``, refusing a size or SHA-256 other than the manifest's."""
    size = spec.get("size")
    if member.size != size:
        _refuse(f"{member.name} has {member.size} bytes, the manifest says {size}")
    digest, written = hashlib.sha256(), 0
    source = tar.extractfile(member)
    with open(dest, "wb") as out:
        for chunk in iter(lambda: source.read(_CHUNK), b""):
            written += len(chunk)
            if written > size:
                _refuse(f"{member.name} is longer than the manifest says")
            digest.update(chunk)
            out.write(chunk)
    if written != size or digest.hexdigest() != spec.get("sha256"):
        _refuse(f"{member.name} does not match its checksum in the manifest")


def import_tarball(tarball: str | os.PathLike, root: str | os.PathLike | None = None) -> dict:
    """Import the entries of a tarball written by :func:`pack` into the cache at ``root`` (see the
    module docstring for what is refused). Returns ``{"added": [...], "kept": [...]}`` (stems);
    raises :class:`ImportRefused` and writes nothing when any check fails."""
    from .. import cache

    root = _cache_root(root)
    try:
        tar = tarfile.open(tarball, "r:*")
    except (OSError, tarfile.TarError) as exc:
        raise ImportRefused(f"refused: {tarball} is not a readable tarball ({exc}); nothing was written") from exc
    staging = Path(tempfile.mkdtemp(dir=root, prefix=".import-"))
    try:
        with tar:
            files: dict = {}
            manifest, members = _read_checked(tar, files)
            for filename, member in members.items():
                _copy_member(tar, member, files[filename], staging / filename)
        stems = [e["stem"] for e in manifest["entries"]]
        for stem in stems:  # each entry's own manifest must describe its payload, as the cache checks it on load
            try:
                own = json.loads((staging / f"{stem}.json").read_text())
            except ValueError:
                _refuse(f"{stem}.json is not JSON")
            name, key = STEM.match(stem)["name"], STEM.match(stem)["key"]
            if not isinstance(own, dict) or own.get("sha256") != _sha256_file(staging / f"{stem}.pt"):
                _refuse(f"{stem}.json does not hold its payload's checksum")
            if own.get("key") != key or own.get("name") != name:
                _refuse(f"{stem}.json names entry {own.get('name')}-{own.get('key')}, not {stem}")
        added, kept = [], []
        for stem in stems:
            lock = root / f"{stem}.lock"
            token = cache._acquire(lock)  # no chapter reads or writes the entry meanwhile
            try:
                if intact(root, stem):
                    kept.append(stem)
                    continue
                os.replace(staging / f"{stem}.pt", root / f"{stem}.pt")
                os.replace(staging / f"{stem}.json", root / f"{stem}.json")  # the manifest last
                added.append(stem)
            finally:
                try:
                    if (cache._lock_holder(lock.read_text()) or {}).get("token") == token:
                        lock.unlink()
                except FileNotFoundError:
                    pass
        return {"added": added, "kept": kept, "library": manifest.get("library"), "selection": manifest.get("selection")}
    finally:
        shutil.rmtree(staging, ignore_errors=True)


__all__ = ["ImportRefused", "Reference", "all_stems", "import_tarball", "intact", "pack", "reference_stems"]
