"""Cache keys hold the code that computed an entry (advbook.codehash): what counts and what does not."""

import os
import subprocess
import sys
import textwrap

import torch

from advbook import cache, codehash

MODULE = '''
"""A module docstring."""

STEPS = 10
"""An attribute docstring."""

def step(x, eps):
    """Take one step."""
    return x + eps  # the update
'''



def digest(*functions):
    """The code part of a cache key, as :func:`advbook.cache.cached` computes it."""
    return codehash.digest_of(codehash.code_identity(*functions))


def test_docstrings_comments_and_layout_do_not_count_statements_do():
    reworded = (MODULE.replace("A module docstring.", "Reworded.").replace("Take one step.", "Ascend once.")
                .replace("An attribute docstring.", "How many steps."))
    reformatted = reworded.replace("  # the update", "").replace("return x + eps", "return (x +\n            eps)")
    changed = MODULE.replace("x + eps", "x - eps")
    assert codehash.syntax_digest(MODULE) == codehash.syntax_digest(reworded) == codehash.syntax_digest(reformatted)
    assert codehash.syntax_digest(changed) != codehash.syntax_digest(MODULE)
    assert codehash.syntax_digest(MODULE.replace("STEPS = 10", "STEPS = 20")) != codehash.syntax_digest(MODULE)


def test_a_library_function_covers_its_module_and_the_numeric_modules_it_imports():
    from advbook import zoo

    modules = codehash.code_identity(zoo.train_classifier)["modules"]
    assert {"advbook.zoo", "advbook.train", "advbook.attacks", "advbook.models", "advbook.data"} <= set(modules)
    assert not set(modules) & codehash.NEUTRAL  # the cache, progress bars, paths... change no number
    # chapter modules pull in their own module, never another chapter's
    upi = codehash.module_closure(["advbook.methods.upi"])
    assert "advbook.universal" in upi and "advbook.methods.dominant" not in upi


def _define(source: str, namespace: dict | None = None) -> dict:
    namespace = {} if namespace is None else namespace
    exec(compile(textwrap.dedent(source), "<cell>", "exec"), namespace)
    return namespace


def test_a_notebook_function_covers_its_own_code_its_helpers_and_the_library_it_imported():
    cell = """
    from advbook.methods import upi
    def helper(x):
        return x * 2
    def compute():
        return helper(3)
    """
    base = _define(cell)
    moved = _define("\n\n\n# an earlier comment\n" + textwrap.dedent(cell))  # same code, other lines
    other_helper = _define(cell.replace("x * 2", "x * 3"))
    other_code = _define(cell.replace("helper(3)", "helper(4)"))
    assert digest(base["compute"]) == digest(moved["compute"])
    assert digest(base["compute"]) != digest(other_helper["compute"])  # a helper it calls changed
    assert digest(base["compute"]) != digest(other_code["compute"])
    assert "advbook.methods.upi" in codehash.code_identity(base["compute"])["modules"]


def test_callables_captured_by_a_closure_count():
    outer = _define("""
    def wrap(inner):
        def run():
            return inner() + 1
        return run
    """)
    a = _define("def f():\n    return 1\n")["f"]
    b = _define("def f():\n    return 2\n")["f"]
    assert digest(outer["wrap"](a)) != digest(outer["wrap"](b))


def test_the_digest_is_the_same_in_another_process_with_another_hash_seed():
    script = ("from advbook import codehash, zoo\n"
              "def compute():\n    return frozenset({'a', 'b', 'c'}) and zoo.train_classifier\n"
              "print(codehash.digest_of(codehash.code_identity(compute, zoo.train_classifier)))")
    out = {subprocess.run([sys.executable, "-c", script], env={**os.environ, "PYTHONHASHSEED": seed},
                          capture_output=True, text=True, check=True).stdout for seed in ("1", "2")}
    assert len(out) == 1


def test_changed_compute_code_is_a_new_entry_and_the_manifest_names_its_code(tmp_path, monkeypatch):
    monkeypatch.setenv("ADVBOOK_CACHE", str(tmp_path))
    first = _define("import torch\ndef compute():\n    return {'w': torch.ones(2)}\n")["compute"]
    same = _define("\n\nimport torch\ndef compute():\n    return {'w': torch.ones(2)}  # reworded\n")["compute"]
    changed = _define("import torch\ndef compute():\n    return {'w': torch.zeros(2)}\n")["compute"]
    misses = cache.STATS["misses"]
    assert cache.cached("code-test", {"k": 1}, first)["w"].sum() == 2
    assert cache.cached("code-test", {"k": 1}, same)["w"].sum() == 2  # a hit: the code is the same
    assert cache.STATS["misses"] == misses + 1
    assert cache.cached("code-test", {"k": 1}, changed)["w"].sum() == 0  # new code, new entry
    assert cache.STATS["misses"] == misses + 2
    manifests = sorted(tmp_path.glob("code-test-*.json"))
    assert len(manifests) == 2
    import json

    codes = {json.loads(m.read_text())["code"] for m in manifests}
    assert codes == {digest(first), digest(changed)}


def test_a_checkpoint_belongs_to_the_code_that_wrote_it(tmp_path, monkeypatch):
    monkeypatch.setenv("ADVBOOK_CACHE", str(tmp_path))
    seen = []

    def train(model, checkpoint):
        seen.append(checkpoint)
        checkpoint.write_bytes(b"an epoch's checkpoint")
        return []

    def other(model, checkpoint):
        return train(model, checkpoint)

    for code in (train, other):
        with cache.trained_model("ckpt-test", {"k": 1}, torch.nn.Linear(2, 2), (code,)) as run:
            assert run.needed
            run.record = code(run.model, run.checkpoint)
    assert seen[0].name == f"ckpt-test-{cache.entry_key('ckpt-test', {'k': 1}, digest(train))}.partial.pt"
    assert seen[1] != seen[0]  # other code, other checkpoint: an interrupted run of one is never resumed by the other
    assert not seen[0].exists() and not seen[1].exists()  # removed once the entry is stored
