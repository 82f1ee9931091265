"""Sharing a warmed cache: pack -> import round trip, and every refusal of a bad tarball leaves the cache as it was."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile

import pytest
import torch

from advbook import cache, profiles
from advbook.book import cachepack, cli

from conftest import ROOT


def _entries(root, n=2):
    """``n`` real cache entries (payload + manifest, as advbook.cache writes them) in the cache at ``root``."""
    stems = []
    for i in range(n):
        cache.save(f"demo-{i}", {"i": i}, {"w": torch.arange(10.0) + i})
        stems += [p.stem for p in root.glob(f"demo-{i}-*.pt")]
    return stems


def _snapshot(root):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def caches(tmp_path, monkeypatch):
    source, target = tmp_path / "teacher", tmp_path / "student"
    source.mkdir()
    target.mkdir()
    monkeypatch.setenv("ADVBOOK_CACHE", str(source))
    return source, target


def test_pack_then_import_round_trip(caches, tmp_path, monkeypatch):
    source, target = caches
    stems = _entries(source)
    (source / f"{stems[0]}.pt").with_suffix(".lock").write_text("{}")  # not an entry: never packed
    packed = cachepack.pack(tmp_path / "class.tar.gz", cachepack.all_stems(source) + ["gone-0123456789abcdef"], source)
    assert [e["stem"] for e in packed["entries"]] == sorted(stems) and packed["missing"] == ["gone-0123456789abcdef"]
    done = cachepack.import_tarball(tmp_path / "class.tar.gz", target)
    assert sorted(done["added"]) == sorted(stems) and done["kept"] == []
    for stem in stems:
        for ext in ("pt", "json"):
            assert (target / f"{stem}.{ext}").read_bytes() == (source / f"{stem}.{ext}").read_bytes()
    assert not list(target.glob(".import-*")) and not list(target.glob("*.lock"))
    monkeypatch.setenv("ADVBOOK_CACHE", str(target))  # the student's cache now serves the entries
    assert torch.equal(cache.load("demo-1", {"i": 1})["w"], torch.arange(10.0) + 1)
    again = cachepack.import_tarball(tmp_path / "class.tar.gz", target)
    assert again["added"] == [] and sorted(again["kept"]) == sorted(stems)


def test_cli_packs_all_and_imports(caches, tmp_path, capsys):
    source, target = caches
    stems = _entries(source, 1)
    out = tmp_path / "all.tar.gz"
    assert cli.main(["cache", "pack", "--all", "-o", str(out), "--cache", str(source)]) == 0
    assert "1 entry" in capsys.readouterr().out
    assert cli.main(["cache", "import", str(out), "--cache", str(target)]) == 0
    assert "imported 1 entry" in capsys.readouterr().out and (target / f"{stems[0]}.json").exists()


def _rewrite(src, dst, edit):
    """Copy tarball ``src`` to ``dst`` with ``edit(name, data) -> [(TarInfo, data or None), ...]`` applied per member."""
    with tarfile.open(src) as tin, tarfile.open(dst, "w:gz") as tout:
        for member in tin.getmembers():
            data = tin.extractfile(member).read()
            for info, blob in edit(member, data):
                tout.addfile(info, io.BytesIO(blob) if blob is not None else None)


def _file(name, blob):
    info = tarfile.TarInfo(name)
    info.size = len(blob)
    return info, blob


def _same(member, data):
    return [_file(member.name, data)]


def _bad_tarballs(good, stems):
    """Tarballs that must be refused, each as (why, edit, what the refusal says)."""
    stem = stems[0]
    payload = f"{cachepack.PREFIX}/entries/{stem}.pt"
    manifest_path = cachepack.MANIFEST

    def extra(name, kind=tarfile.REGTYPE, link=""):
        """Add one member ``name`` (a one-byte file, or a link to ``link``) beside the tarball's manifest."""
        def edit(member, data):
            out = _same(member, data)
            if member.name == manifest_path:
                info = tarfile.TarInfo(name)
                info.type, info.linkname = kind, link
                if kind == tarfile.REGTYPE:
                    info.size = 1
                out.append((info, b"x" if kind == tarfile.REGTYPE else None))
            return out
        return edit

    def tampered_payload(member, data):
        return [_file(member.name, data[:-1] + bytes([data[-1] ^ 1]) if member.name == payload else data)]

    def tampered_consistently(member, data):
        """The payload changed and the tarball's manifest updated to match: the entry's own manifest still refuses it."""
        if member.name == payload:
            return [_file(member.name, data[:-1] + bytes([data[-1] ^ 1]))]
        if member.name == manifest_path:
            manifest = json.loads(data)
            for entry in manifest["entries"]:
                for name, spec in entry["files"].items():
                    if name == f"{stem}.pt":
                        with tarfile.open(good) as t:
                            blob = t.extractfile(payload).read()
                        blob = blob[:-1] + bytes([blob[-1] ^ 1])
                        spec["sha256"] = hashlib.sha256(blob).hexdigest()
            return [_file(member.name, json.dumps(manifest).encode())]
        return _same(member, data)

    def dropped_manifest_of_entry(member, data):
        return [] if member.name.endswith(f"{stem}.json") else _same(member, data)

    def renamed_entry(member, data):
        """An entry moved to another key: it would be loaded for a configuration it was not computed for."""
        other = stem[:-16] + "0" * 16
        name = member.name.replace(stem, other)
        if member.name == manifest_path:
            data = data.replace(stem.encode(), other.encode())
        return [_file(name, data)]

    return [
        ("path outside the cache (..)", extra(f"{cachepack.PREFIX}/entries/../../evil-0123456789abcdef.pt"),
         "not a cache entry file"),
        ("absolute path", extra("/tmp/advbook-evil-0123456789abcdef.pt"), "not a cache entry file"),
        ("symbolic link", extra(f"{cachepack.PREFIX}/entries/link-0123456789abcdef.pt", tarfile.SYMTYPE, "/etc/passwd"),
         "not a regular file"),
        ("hard link", extra(f"{cachepack.PREFIX}/entries/link-0123456789abcdef.pt", tarfile.LNKTYPE, payload),
         "not a regular file"),
        ("a file the manifest does not list", extra(f"{cachepack.PREFIX}/entries/extra-0123456789abcdef.pt"),
         r"not listed: \['extra-"),
        ("payload changed", tampered_payload, "does not match its checksum in the manifest"),
        ("payload and tarball manifest changed", tampered_consistently, "does not hold its payload's checksum"),
        ("entry without its manifest", dropped_manifest_of_entry, r"listed but absent: \['demo-0"),
        ("entry under another key", renamed_entry, "names entry demo-0-"),
    ]


def test_import_refuses_bad_tarballs_and_leaves_the_cache_untouched(caches, tmp_path):
    source, target = caches
    stems = _entries(source)
    good = tmp_path / "good.tar.gz"
    cachepack.pack(good, stems, source)
    # the target already holds an entry of its own, which no refused import may touch
    target_entry = source / f"{stems[1]}.pt"
    (target / target_entry.name).write_bytes(target_entry.read_bytes())
    (target / f"{stems[1]}.json").write_bytes((source / f"{stems[1]}.json").read_bytes())
    before = _snapshot(target)
    for i, (why, edit, says) in enumerate(_bad_tarballs(good, stems)):
        bad = tmp_path / f"bad{i}.tar.gz"
        _rewrite(good, bad, edit)
        with pytest.raises(cachepack.ImportRefused, match=says) as refused:
            cachepack.import_tarball(bad, target)
        assert "nothing was written" in str(refused.value), why
        assert _snapshot(target) == before, why
    assert not (tmp_path / "evil-0123456789abcdef.pt").exists() and not (target.parent / "evil-0123456789abcdef.pt").exists()
    not_a_tarball = tmp_path / "junk.tar.gz"
    not_a_tarball.write_bytes(b"not a tarball")
    with pytest.raises(cachepack.ImportRefused):
        cachepack.import_tarball(not_a_tarball, target)
    assert _snapshot(target) == before
    assert cachepack.import_tarball(good, target)["added"] == [stems[0]]  # the good one still imports


def test_reference_models_are_packed_at_the_key_the_chapter_asks_for(caches, tmp_path, monkeypatch):
    """The primer's tiny reference models: listed without training, found once trained, served after import."""
    from advbook import data, runtime, zoo

    source, target = caches
    found = cachepack.reference_stems("tiny", ROOT, ["00"])
    assert len(found.stems) == 4 and not found.skipped  # standard + adversarial for seeds 0 and 1
    assert not list(source.glob("*.pt"))  # listing trained nothing
    device = runtime.resolve_device("cpu")
    ds = data.load("mnist5k", device=device, n_train=512, n_test=100)
    zoo.reference_model(ds, profiles.get("tiny").recipe("mnist5k"), "standard", 0)  # what the primer trains first
    trained = [p.stem for p in source.glob("standard-*.pt")]
    assert len(trained) == 1 and trained[0] in found.stems
    packed = cachepack.pack(tmp_path / "ref.tar.gz", found.stems, source)
    assert [e["stem"] for e in packed["entries"]] == trained and len(packed["missing"]) == 3
    cachepack.import_tarball(tmp_path / "ref.tar.gz", target)
    monkeypatch.setenv("ADVBOOK_CACHE", str(target))
    hits = cache.STATS["hits"]
    zoo.reference_model(ds, profiles.get("tiny").recipe("mnist5k"), "standard", 0)
    assert cache.STATS["hits"] == hits + 1  # loaded from the imported entry, not retrained
