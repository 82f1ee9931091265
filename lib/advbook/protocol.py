"""The replication protocol: every claim of the book is declared once and graded by one function.

A claim is declared *before* it is measured (:class:`Claim`, kept beside its method in
``advbook.methods.<paper>.CLAIMS``): the paper's words and where they stand, the statistic and
the direction the paper predicts, the **smallest effect size of interest** (SESOI) with its
reason, the comparator or null, and the unit of replication (training seeds or optimisation
seeds for a claim about a method; test images only for a claim about one fixed model).

:func:`grade` turns the replicates of that unit into a verdict from the 95% interval of their
mean (a Student-t interval over seeds, or over per-image values; a Wilson interval for a
proportion of test images). With ``e`` the effect in the predicted direction,
``[lo, hi]`` its interval and ``s`` the SESOI:

=====================  ==========================================================
``reproduced``          ``lo > 0`` and the estimate ``e >= s``
``partly reproduced``   ``lo > 0`` and ``e < s``
``not reproduced``      ``lo <= 0 <= hi`` and ``hi < s``: any effect is smaller than claimed
``inconclusive``        ``lo <= 0`` and ``hi >= s``: the interval holds 0 and the SESOI
``contradicted``        ``hi < 0``: the interval excludes 0 in the opposite direction
=====================  ==========================================================

One replicate of a method claim has no interval, so it is ``inconclusive``. Several settings
of one claim (two radii, two comparators) form a *family* graded together with Holm's
step-down correction (:func:`grade_family`). A statistic that a trivial baseline could pass
is graded against that baseline, and the baseline's own replicates go through the same
function (:func:`grade_null`); the result is shown beside the claim's.

What a verdict other than *reproduced* says about scale is derived, never typed
(:func:`assess`): *scale-limited* only where a larger run of the same claim (the ``long``
profile, a recorded run, or a stronger setting the chapter ran) moved the estimate toward the
SESOI by more than the noise of the move (the two runs' interval half-widths combined in
quadrature), or reached it; *no trend with scale* where
a larger run exists and did not; *untested at a larger scale* otherwise. Known deviations
from the paper's setting are recorded with the claim and shown beside the verdict, never
used as its excuse.

Background: Lakens (2017), equivalence tests and the SESOI; Open Science Collaboration (2015),
replication criteria; Simonsohn (2015), "small telescopes".
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

VERDICTS = ("reproduced", "partly reproduced", "not reproduced", "inconclusive", "contradicted")
"""The five outcomes of :func:`grade`, in the order of the key on the Reproducibility page."""

VERDICT_KEY = {
    "reproduced": "the 95% interval excludes 0 in the paper's direction and the estimate reaches the smallest "
                  "effect of interest (SESOI)",
    "partly reproduced": "the interval excludes 0 in the paper's direction, but the estimate falls short of the SESOI",
    "not reproduced": "the interval excludes the SESOI but not 0: any effect is smaller than the paper's",
    "inconclusive": "the interval holds both 0 and the SESOI: more replicates are needed to decide",
    "contradicted": "the interval excludes 0 in the direction opposite to the paper's",
}
"""One line per verdict word, shown as the key of every claims table."""

ASSESSMENTS = ("scale-limited", "no trend with scale", "untested at a larger scale")
"""What a verdict short of *reproduced* says about scale, derived by :func:`assess`."""

UNITS = ("training seed", "optimisation seed", "test image", "test image pair")
"""Units of replication. Seeds for a claim about a training or optimisation method; test images
(or pairs of them) only for a claim about one fixed model."""

SCALE_ORDER = ("tiny", "quick", "long", "full")
"""Profiles from the smallest to the largest: a run of a later profile is a larger run."""


class ProtocolError(ValueError):
    """A claim declared or graded against the protocol's rules (the message says which)."""


@dataclass(frozen=True)
class Claim:
    """One paper claim, declared before any result (the fields of the results JSON, less the measured ones).

    ``statistic`` is an *effect*: it is ``null_value`` when the paper's effect is absent (a gap
    between two methods is 0, a ratio against a baseline is 1) and moves in ``direction``
    (``+1`` or ``-1``) when it is present. ``sesoi`` is the smallest effect of interest, a
    positive distance from ``null_value`` in the predicted direction, with ``sesoi_reason``
    saying where it comes from (the paper's own number, or a stated fraction of it).
    ``replicates`` names the chapter parameter that sets the number of replicates (a list of
    seeds, or a number of test images), so that each profile's count is declared with it.
    """

    key: str
    text: str
    quote: str
    source: str
    statistic: str
    direction: int
    sesoi: float
    sesoi_reason: str
    comparator: str
    unit: str
    replicates: str
    null_value: float = 0.0
    null: str | None = None
    """The trivial baseline that could pass the statistic, when there is one (graded beside it)."""
    deviations: tuple[str, ...] = ()
    """Known deviations from the paper's setting, shown beside the verdict (never its excuse)."""
    inferred: bool = False
    """True where the claim is our reading of the paper ([I] in PAPERS.md), not its words."""
    setting: str = ""
    """For one member of a family (the same claim at several radii or against several comparators)."""

    def __post_init__(self) -> None:
        if self.direction not in (1, -1):
            raise ProtocolError(f"claim {self.key!r}: direction must be +1 or -1, got {self.direction!r}")
        if not (isinstance(self.sesoi, (int, float)) and self.sesoi > 0 and math.isfinite(self.sesoi)):
            raise ProtocolError(f"claim {self.key!r}: sesoi must be a positive number, got {self.sesoi!r}")
        if self.unit not in UNITS:
            raise ProtocolError(f"claim {self.key!r}: unit {self.unit!r} is not known; allowed: {', '.join(UNITS)}")
        for name in ("text", "quote", "source", "statistic", "sesoi_reason", "comparator", "replicates"):
            if not str(getattr(self, name)).strip():
                raise ProtocolError(f"claim {self.key!r}: {name} must be stated")

    @property
    def method_claim(self) -> bool:
        """Whether the replicates are seeds (a claim about a training or optimisation method)."""
        return self.unit.endswith("seed")

    def at(self, setting: str, **changes: Any) -> "Claim":
        """The same claim at one setting of a family (``claim.at("eps 0.1", key="transfer-0.1")``)."""
        return replace(self, setting=setting, **{"key": f"{self.key}@{setting}", **changes})

    def planned(self, profiles: Mapping[str, Mapping[str, Any]]) -> dict[str, int]:
        """Replicates each profile runs: the length (or value) of its ``replicates`` parameter."""
        out = {}
        for name, values in profiles.items():
            v = values.get(self.replicates)
            out[name] = len(v) if isinstance(v, (list, tuple)) else int(v) if isinstance(v, (int, float)) else 0
        return out


@dataclass
class Graded:
    """A claim graded from its replicates: what the results JSON records (:meth:`record`)."""

    claim: Claim
    n: int
    estimate: float
    ci: tuple[float, float]
    verdict: str
    level: float = 0.95
    interval: str = "t"
    reason: str = ""
    values: list[float] = field(default_factory=list)
    null: dict | None = None
    assessment: str | None = None
    evidence: str = ""
    ours: str = ""

    @property
    def effect(self) -> float:
        """The estimate as a distance from the null value in the predicted direction."""
        return self.claim.direction * (self.estimate - self.claim.null_value)

    @property
    def half_width(self) -> float:
        return (self.ci[1] - self.ci[0]) / 2

    def record(self) -> dict:
        """The claim's entry of the results JSON (the protocol's field names)."""
        c = self.claim
        return _plain({
            "key": c.key, "claim": c.text, "setting": c.setting, "quote": c.quote, "source": c.source,
            "inferred": c.inferred, "statistic": c.statistic, "direction": c.direction, "null_value": c.null_value,
            "sesoi": c.sesoi, "sesoi_reason": c.sesoi_reason, "comparator": c.comparator, "unit": c.unit,
            "n": self.n, "estimate": self.estimate, "ci": list(self.ci), "level": self.level,
            "interval": self.interval, "verdict": self.verdict, "reason": self.reason,
            "assessment": self.assessment, "evidence": self.evidence, "null": self.null,
            "deviations": list(c.deviations), "ours": self.ours, "values": self.values if c.method_claim else [],
        })


def _plain(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _values(values: Iterable[float]) -> list[float]:
    if hasattr(values, "detach"):
        values = values.detach().double().flatten().cpu().tolist()
    out = [float(v) for v in values]
    return [v for v in out if math.isfinite(v)]


def interval(values: Sequence[float], unit: str, level: float = 0.95) -> tuple[float, float, float, str]:
    """Mean of the replicates and its ``level`` interval: ``(mean, low, high, kind)``.

    Seeds: Student-t, ``mean -+ t_{(1+level)/2, n-1} sd / sqrt(n)``. Test images whose values
    are all 0 or 1 (a proportion): Wilson's score interval, which stays inside [0, 1] and is not
    degenerate at 0 or 1. Other per-image values (paired differences): Student-t, which for
    hundreds of images is the normal interval. One replicate gives ``(v, -inf, inf)``.
    """
    from .stats import t_interval, wilson_interval

    v = _values(values)
    if not v:
        return float("nan"), float("-inf"), float("inf"), "none"
    if unit.startswith("test image") and len(v) > 1 and all(x in (0.0, 1.0) for x in v):
        z = _normal_quantile((1 + level) / 2)
        p = sum(v) / len(v)
        lo, hi = wilson_interval(p, len(v), z=z)
        return p, lo, hi, "wilson"
    mean, lo, hi = t_interval(v, level=level)
    return mean, lo, hi, "t"


def _normal_quantile(q: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(q))


def p_value(values: Sequence[float], unit: str, null_value: float = 0.0) -> float:
    """Two-sided p-value of "mean = null_value" for the same interval :func:`interval` uses (for Holm)."""
    from scipy.stats import norm, t as student_t

    v = _values(values)
    if len(v) < 2:
        return 1.0
    mean, _, _, kind = interval(v, unit)
    n = len(v)
    if kind == "wilson":
        se = math.sqrt(max(null_value * (1 - null_value), 1e-12) / n) if 0 < null_value < 1 else \
            math.sqrt(max(mean * (1 - mean), 1e-12) / n)
        return float(2 * norm.sf(abs(mean - null_value) / se))
    sd = math.sqrt(sum((x - mean) ** 2 for x in v) / (n - 1))
    if sd == 0:
        return 0.0 if mean != null_value else 1.0
    return float(2 * student_t.sf(abs(mean - null_value) / (sd / math.sqrt(n)), n - 1))


def verdict_of(effect: float, lo: float, hi: float, sesoi: float) -> tuple[str, str]:
    """The verdict word of an effect and its interval, all in the predicted direction, and why."""
    if not math.isfinite(effect):
        return "inconclusive", "not measured"
    if hi < 0:
        return "contradicted", "the interval lies below 0 (opposite to the paper's direction)"
    if lo > 0:
        if effect >= sesoi:
            return "reproduced", f"the interval excludes 0 and the estimate reaches the SESOI {sesoi:g}"
        return "partly reproduced", f"the interval excludes 0; the estimate is short of the SESOI {sesoi:g}"
    if hi < sesoi:
        return "not reproduced", f"the interval holds 0 and excludes the SESOI {sesoi:g}"
    if not math.isfinite(lo) or not math.isfinite(hi):
        return "inconclusive", "one replicate: no interval"
    return "inconclusive", f"the interval holds both 0 and the SESOI {sesoi:g}"


def replicates_needed(values: Sequence[float], sesoi: float, unit: str, level: float = 0.95) -> int | None:
    """About how many replicates make the interval's half-width half the SESOI (so that it can exclude
    0 or the SESOI), from the spread seen so far; ``None`` with fewer than two replicates."""
    v = _values(values)
    if len(v) < 2:
        return None
    mean = sum(v) / len(v)
    sd = math.sqrt(sum((x - mean) ** 2 for x in v) / (len(v) - 1))
    if sd == 0:
        return len(v)
    z = _normal_quantile((1 + level) / 2)
    return max(len(v), math.ceil((2 * z * sd / sesoi) ** 2) + 1)


def grade(claim: Claim, values: Iterable[float], *, level: float = 0.95, ours: str = "") -> Graded:
    """Grade ``claim`` from its replicates (one value per seed, or per test image for a fixed model).

    The values are the statistic per replicate (for a paired design, the per-replicate
    difference). NaN values are dropped; no value at all is *inconclusive* ("not measured").
    ``ours`` is a short description of what was measured, shown in the claims table.
    """
    v = _values(values)
    mean, lo, hi, kind = interval(v, claim.unit, level)
    d, ref = claim.direction, claim.null_value
    if math.isfinite(mean):
        effect = d * (mean - ref)
        e_lo, e_hi = sorted((d * (lo - ref), d * (hi - ref)))
    else:
        effect, e_lo, e_hi = float("nan"), float("-inf"), float("inf")
    verdict, reason = verdict_of(effect, e_lo, e_hi, claim.sesoi)
    if verdict == "inconclusive" and v:
        need = replicates_needed(v, claim.sesoi, claim.unit, level)
        what = "seeds" if claim.method_claim else "test images"
        reason += f"; about {need} {what} would decide" if need else f"; at least 2 {what} are needed"
    return Graded(claim, len(v), mean, (lo, hi), verdict, level, kind, reason, v, ours=ours)


def grade_family(members: Sequence[tuple[Claim, Iterable[float]]], *, alpha: float = 0.05,
                 ours: Sequence[str] | None = None) -> list[Graded]:
    """Grade several settings of one claim with Holm's step-down correction (Holm 1979).

    The settings are ordered by the p-value of "no effect" (:func:`p_value`); the ``i``-th
    (from 0) is graded with the interval at level ``1 - alpha / (m - i)`` while the earlier
    ones all excluded 0; from the first that does not, every later setting is graded at that
    setting's level, so none of them can exclude 0 where Holm would not reject.
    """
    members = [(c, _values(v)) for c, v in members]
    m = len(members)
    if m == 0:
        return []
    ps = [p_value(v, c.unit, c.null_value) for c, v in members]
    order = sorted(range(m), key=lambda i: ps[i])
    levels = [0.0] * m
    stopped = None
    for rank, i in enumerate(order):
        if stopped is None:
            levels[i] = 1 - alpha / (m - rank)
            if ps[i] > alpha / (m - rank):
                stopped = levels[i]
        else:
            levels[i] = stopped
    out = []
    for j, (c, v) in enumerate(members):
        g = grade(c, v, level=levels[j], ours=(ours[j] if ours else ""))
        g.reason += f" (Holm: {m} settings, level {levels[j]:.4g})" if m > 1 else ""
        out.append(g)
    return out


def grade_null(claim: Claim, values: Iterable[float], what: str | None = None, *, level: float = 0.95) -> dict:
    """The trivial baseline's replicates through the claim's own statistic and grading.

    Returns the ``null`` entry of the results JSON: the baseline's estimate, interval and
    verdict. A sound claim's null is neither *reproduced* nor *partly reproduced*
    (tests/test_protocol.py checks the rule; each chapter's test checks its nulls).
    """
    g = grade(claim, values, level=level)
    return _plain({"what": what or claim.null or "", "n": g.n, "estimate": g.estimate, "ci": list(g.ci),
                   "verdict": g.verdict})


# ---------------------------------------------------------------------------------------------
# Assessment: what a verdict short of "reproduced" says about scale, from larger runs
# ---------------------------------------------------------------------------------------------


def comparable(record: Mapping[str, Any], claim: Claim) -> bool:
    """Whether a results-JSON claim ``record`` measures the same thing as ``claim`` (same key,
    statistic, direction, null value and SESOI), so that its estimate can be compared."""
    return (record.get("key") == claim.key and record.get("statistic") == claim.statistic
            and record.get("direction") == claim.direction and record.get("sesoi") == claim.sesoi
            and record.get("null_value", 0.0) == claim.null_value)


def assess(graded: Graded, larger: Sequence[Mapping[str, Any] | Graded] = ()) -> Graded:
    """Derive ``graded.assessment`` and ``graded.evidence`` from larger runs of the same claim.

    ``larger`` holds results-JSON records (:meth:`Graded.record`, with an optional ``label``
    such as ``"long profile, recorded 2026-12-01"``) or :class:`Graded` objects of stronger
    settings the chapter ran (more steps, more data). Only those :func:`comparable` with the
    claim count. A *reproduced* claim needs no assessment. Otherwise:

    * *scale-limited*: a larger run reached the SESOI (its verdict is *reproduced*) or moved
      the effect toward it by more than the sampling noise of the move: the half-width of the
      difference of two independent estimates, ``sqrt(h_small**2 + h_large**2)`` (when the
      larger run has no interval, this run's half-width alone). The issue's first reading,
      "more than this run's half-width", called a move of +0.04 between two runs that both
      sit near 0 (half-widths 0.039 and 0.03) a trend; the difference's own interval does not;
    * *no trend with scale*: larger runs exist and none did;
    * *untested at a larger scale*: none exists.
    """
    if graded.verdict == "reproduced":
        graded.assessment, graded.evidence = None, ""
        return graded
    claim = graded.claim
    runs = []
    for other in larger:
        if isinstance(other, Graded):
            rec = {**other.record(), "label": other.ours or "stronger setting"}
        else:
            rec = dict(other)
        if comparable(rec, claim) and rec.get("estimate") is not None:
            runs.append(rec)
    if not runs:
        graded.assessment, graded.evidence = "untested at a larger scale", ""
        return graded
    half = graded.half_width if math.isfinite(graded.half_width) else float("inf")
    notes, moved_enough = [], False
    for rec in runs:
        effect = claim.direction * (rec["estimate"] - claim.null_value)
        moved = effect - graded.effect if math.isfinite(graded.effect) else float("nan")
        ci = rec.get("ci") or [None, None]
        ci_text = f" [{ci[0]:.3g}, {ci[1]:.3g}]" if None not in ci else ""
        notes.append(f"{rec.get('label', 'larger run')} (n={rec.get('n')}): {rec['estimate']:.3g}{ci_text}, "
                     f"{rec.get('verdict')}; moved {moved:+.3g} toward the SESOI {claim.sesoi:g}")
        noise = math.hypot(half, (ci[1] - ci[0]) / 2) if None not in ci else half
        notes[-1] += f" (noise of the move {noise:.3g})"
        if rec.get("verdict") == "reproduced" or (math.isfinite(moved) and moved > noise):
            moved_enough = True
    graded.assessment = "scale-limited" if moved_enough else "no trend with scale"
    graded.evidence = "; ".join(notes) + f" (this run's half-width {half:.3g})"
    return graded


def larger_runs(chapter: str, profile: str, results_dir: Path | None = None,
                recorded_dir: Path | None = None) -> list[dict]:
    """The claim records of every run of ``chapter`` at a profile larger than ``profile``.

    Looks in the build's results folder (``<chapter>.<profile>.json``, and ``<chapter>.json``
    for the full profile) first, then in ``book/measurements/runs`` (committed recorded runs).
    Each record gains a ``label`` naming the run. Unknown profiles have no larger runs.
    """
    from .paths import recorded_dir as default_recorded, results_dir as default_results

    if profile not in SCALE_ORDER:
        return []
    bigger = SCALE_ORDER[SCALE_ORDER.index(profile) + 1:]
    roots = [(results_dir or default_results(), False),
             (recorded_dir or default_recorded(), True)]
    out, seen = [], set()
    for prof in bigger:
        for root, recorded in roots:
            for name in (f"{chapter}.{prof}.json", f"{chapter}.json"):
                path = root / name
                if prof in seen or not path.exists():
                    continue
                try:
                    data = json.loads(path.read_text())
                except (OSError, ValueError):
                    continue
                if data.get("profile") != prof:
                    continue
                seen.add(prof)
                when = (data.get("provenance") or {}).get("started", "")[:10]
                label = f"{prof} profile" + (f", recorded run {when}" if recorded else f" run {when}")
                out += [{**c, "label": label} for c in data.get("claims", []) if "statistic" in c]
    return out


def estimate_text(result: "Graded | Mapping[str, Any]", *, decimals: int = 3, signed: bool = True,
                  verdict: bool = False) -> str:
    """A graded claim's estimate and 95% interval as prose text: ``+0.123 [+0.045, +0.201]``.

    ``result``: a :class:`Graded` or its record (a mapping with ``estimate``, ``ci`` and ``verdict``).
    ``decimals`` digits after the point, a sign on every number when ``signed``, and `` (<verdict>)``
    appended when ``verdict``. Without an estimate it reads ``not measured``; without an interval (one
    replicate), the estimate alone.
    """
    get = result.get if isinstance(result, Mapping) else lambda name: getattr(result, name)
    estimate, ci = get("estimate"), get("ci") or (None, None)
    if estimate is None:
        text = "not measured"
    else:
        form = f"{'+' if signed else ''}.{decimals}f"
        text = format(estimate, form)
        if ci[0] is not None and ci[1] is not None:
            text += f" [{format(ci[0], form)}, {format(ci[1], form)}]"
    return text + (f" ({get('verdict')})" if verdict else "")


def mean_interval_text(values: Iterable[float], *, decimals: int = 4, ci_decimals: int = 3) -> str:
    """Per-replicate values (one per seed) as prose text, ``mean [95% Student-t interval]``
    (:func:`advbook.stats.t_interval`): ``0.9123 [0.871, 0.954]``. NaN values (replicates a gate dropped) are
    left out; one value reads alone, none reads ``n/a``. Not a verdict: a claim is graded by :func:`grade`."""
    from .stats import t_interval

    values = [v for v in values if v == v]
    if not values:
        return "n/a"
    mean, lo, hi = t_interval(values)
    return f"{mean:.{decimals}f}" + (f" [{lo:.{ci_decimals}f}, {hi:.{ci_decimals}f}]" if len(values) > 1 else "")


def family_text(members: Sequence[Graded], *, decimals: int = 3, empty: str = "") -> str:
    """The members of a graded family for prose: ``<setting>: <verdict> (<signed estimate>)`` each, joined by
    ``"; "`` (``empty`` when there are none)."""
    return "; ".join(f"{g.claim.setting}: {g.verdict} ({g.estimate:+.{decimals}f})" for g in members) or empty


def claims_table(records: Sequence[Mapping[str, Any]], *, chapter_column: bool = False) -> str:
    """A Markdown table of graded claims (results-JSON records), with the verdict key above it."""
    def cell(text: Any) -> str:
        return str(text if text is not None else "").replace("|", "\\|").replace("\n", " ")

    def num(x: Any) -> str:
        return "n/a" if x is None else f"{x:.3g}"

    head = ("| " + ("Ch. | " if chapter_column else "") + "Claim | Paper | Statistic (paper's direction, SESOI) "
            "| Unit, n | Estimate [95% CI] | Null baseline | Verdict |")
    rows = [head, "|" + "---|" * (7 + chapter_column)]
    for r in records:
        if "statistic" not in r:  # a claim recorded before the protocol
            rows.append("| " + (f"{cell(r.get('chapter', ''))[:2]} | " if chapter_column else "")
                        + f"{cell(r.get('claim'))} | {cell(r.get('paper', ''))} | | | {cell(r.get('ours', ''))} | "
                        f"| **{cell(r.get('verdict'))}** (old rule) |")
            continue
        arrow = ">" if r["direction"] > 0 else "<"
        setting = f" ({r['setting']})" if r.get("setting") else ""
        quote = f"\"{cell(r['quote'])}\" ({cell(r['source'])})" if not r.get("inferred") else \
            f"our reading: {cell(r['quote'])} ({cell(r['source'])})"
        ci = r.get("ci") or [None, None]
        est = f"{num(r.get('estimate'))} [{num(ci[0])}, {num(ci[1])}]"
        if r.get("ours"):
            est += f"; {cell(r['ours'])}"
        null = r.get("null")
        null_text = (f"{cell(null.get('what'))}: {num(null.get('estimate'))} [{num((null.get('ci') or [None])[0])}, "
                     f"{num((null.get('ci') or [None, None])[1])}], {null.get('verdict')}") if null else ""
        verdict = f"**{r['verdict']}**"
        if r.get("assessment"):
            verdict += f"; {r['assessment']}"
        extra = []
        if r.get("evidence"):
            extra.append(cell(r["evidence"]))
        if r.get("deviations"):
            extra.append("deviations: " + cell("; ".join(r["deviations"])))
        if extra:
            verdict += " (" + "; ".join(extra) + ")"
        rows.append("| " + (f"{cell(r.get('chapter', ''))[:2]} | " if chapter_column else "")
                    + f"{cell(r['claim'])}{cell(setting)} | {quote} | {cell(r['statistic'])} ({arrow} "
                    f"{r.get('null_value', 0):g}, SESOI {r['sesoi']:g}) | {cell(r['unit'])}, {r['n']} | {est} "
                    f"| {null_text} | {verdict} |")
    return "\n".join(rows)


def verdict_key() -> str:
    """The five verdict words and the three assessments, as a Markdown list (the key of a claims table)."""
    lines = [f"* **{word}**: {text}" for word, text in VERDICT_KEY.items()]
    lines.append("* Assessment of a verdict short of *reproduced*: **scale-limited** when a larger run of the same "
                 "claim moved the estimate toward the SESOI by more than the noise of the move (the two runs' "
                 "interval half-widths combined in quadrature) or reached it; **no trend with scale** when a larger run did not; **untested at a larger scale** "
                 "when there is none.")
    return "\n".join(lines)


__all__ = ["VERDICTS", "VERDICT_KEY", "ASSESSMENTS", "UNITS", "SCALE_ORDER", "ProtocolError", "Claim", "Graded",
           "interval", "p_value", "verdict_of", "replicates_needed", "grade", "grade_family", "grade_null",
           "comparable", "assess", "larger_runs", "estimate_text", "mean_interval_text", "family_text", "claims_table", "verdict_key"]
