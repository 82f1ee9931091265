"""The measurements of chapter 1 (excessive invariance) that its claims are graded on.

:mod:`advbook.methods.invariance` holds the method: the invertible classifier, its training (CE,
CE+likelihood, iCE), metamers, the post-hoc probes and the shift data. This module holds what the
chapter measures with them and how the claims are graded from it:

* the cached experiments: :func:`scored_metamers` (the metamer attack of one model, scored by the
  independent CNN, cache entry ``inn-metamer-attack``) and :func:`round_trips` (per-sample round-trip
  errors, ``inn-round-trips``);
* the per-seed replicates of every claim (one value per training seed, paired within a seed):
  :func:`probe_differences`, :func:`gated_statistics` (the metamer claims behind the invertibility gate)
  and :func:`shift_gain`, gathered per setting by :func:`replicates` and :func:`nulls` from a
  :class:`SettingRun`;
* the grading of one claim at every setting the run trains (:func:`grade_settings`, Holm over the
  settings, with :func:`weight_deviations` where the nuisance weight was set by hand);
* the text the claims table and the prose quote (:func:`evidence`, :func:`settings_text`).

Why a module of its own: every cached INN training and probe of the chapter is keyed by the code of
:mod:`advbook.methods.invariance` (:mod:`advbook.codehash` hashes a library function's whole module),
so measurement code kept there would make any edit of it retrain every INN. Here an edit recomputes
only the entries this module computes (the metamer attacks and the round trips).
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import torch
from torch import nn

from .. import cache, protocol
from . import invariance as inv

NULL_WHAT = {"ce-label-in-zn": "raw pixels minus untrained INN",
             "metamers": "blend with a and b swapped, minus the blend"}
"""What each claim's null baseline is, in the claims table's words (claims without one are absent)."""


# ----------------------------------------------------------------------------- the cached experiments


def scored_metamers(model: inv.InvertibleClassifier, oracle: nn.Module, x: torch.Tensor, y: torch.Tensor,
                    ia: torch.Tensor, ib: torch.Tensor) -> dict:
    """The metamer attack of ``model`` (:func:`advbook.methods.invariance.metamer_attack`) on the test pairs
    ``(x[ia], x[ib])`` (:func:`~advbook.methods.invariance.pair_indices`), scored by the independent CNN
    ``oracle``; cached as ``inn-metamer-attack`` by both nets' weights and the pairs' images and labels."""
    xa, ya, xb, yb = x[ia], y[ia], x[ib], y[ib]
    return cache.cached_result("inn-metamer-attack", [model, oracle], (xa, ya, xb, yb), {},
                               lambda: inv.metamer_attack(model, oracle, xa, ya, xb, yb))


def round_trips(model: inv.InvertibleClassifier, x: torch.Tensor, ia: torch.Tensor, ib: torch.Tensor) -> dict:
    """Per-sample round-trip errors of ``model``, cached as ``inn-round-trips`` by its weights, ``x`` and the
    pairs: ``data``, ``max_i |F^{-1}(F(x))_i - x_i|`` on the images ``x``; ``metamers``, the same on the
    (unclipped) metamers of the pairs ``(x[ia], x[ib])``; ``codes``, ``max_i |F(F^{-1}(z))_i - z_i|`` on their
    glued codes (:func:`~advbook.methods.invariance.reconstruction_error`,
    :func:`~advbook.methods.invariance.code_roundtrip_error`). Tensors on the CPU."""
    def compute():
        codes = inv.metamer_codes(model, x[ia], x[ib])
        return {"data": inv.reconstruction_error(model, x).cpu(),
                "metamers": inv.reconstruction_error(model, inv.decode_all(model, codes)).cpu(),
                "codes": inv.code_roundtrip_error(model, codes).cpu()}

    return cache.cached_result("inn-round-trips", model, (x, ia, ib), {}, compute)


# ----------------------------------------------------------------------------- per-seed replicates


def probe_differences(probes: Mapping, untrained: Mapping, raw: Mapping, seeds: Sequence[int]) -> tuple[list, ...]:
    """The replicates of the two probe claims, one per training seed ``s`` of ``seeds``.

    ``probes[objective, s]``: the post-hoc probe's test accuracy on ``z_n`` of a trained model
    (:func:`~advbook.methods.invariance.nuisance_probe`); ``untrained[s]``: the same probe on the untrained
    INN of seed ``s``; ``raw[s]``: on the raw pixels. Returns three lists: CE+likelihood minus the untrained
    INN (claim ``ce-label-in-zn``), raw pixels minus the untrained INN (its null) and CE+likelihood minus
    iCE (claim ``ice-removes-label``).
    """
    return ([probes["ce_mle", s] - untrained[s] for s in seeds],
            [raw[s] - untrained[s] for s in seeds],
            [probes["ce_mle", s] - probes["ice", s] for s in seeds])


def gated_statistics(attacks: Mapping, gates: Mapping, seeds: Sequence[int]) -> tuple[list, list, list]:
    """The replicates of the metamer claims behind the invertibility gate, one per training seed.

    ``attacks[objective, s]``: :func:`scored_metamers` of a model; ``gates[objective, s]``: its
    ``(passed, why)`` (:func:`~advbook.methods.invariance.invertibility_gate`). Returns three lists: the
    ``metamers`` claim's statistic (:func:`~advbook.methods.invariance.metamer_statistic`) and its null
    (:func:`~advbook.methods.invariance.metamer_null`) on the CE+likelihood model, and the
    ``ice-metamers-look`` statistic (among the metamers that keep ``F``'s decision, the share the CNN gives
    ``x_a``'s class: iCE minus CE+likelihood). A seed whose model (for the look gain: either model) fails
    the gate is NaN: the replicate is dropped, since its metamers are not what the model encodes.
    """
    nan = float("nan")
    ok = {key: passed for key, (passed, _) in gates.items()}
    stat = [inv.metamer_statistic(attacks["ce_mle", s]) if ok["ce_mle", s] else nan for s in seeds]
    null = [inv.metamer_null(attacks["ce_mle", s]) if ok["ce_mle", s] else nan for s in seeds]
    look = [attacks["ice", s]["sees_a_given_kept"] - attacks["ce_mle", s]["sees_a_given_kept"]
            if ok["ce_mle", s] and ok["ice", s] else nan for s in seeds]
    return stat, null, look


def shift_gain(shift_accs: Mapping, seeds: Sequence[int]) -> list:
    """The replicates of ``ice-shift``: per training seed, iCE's accuracy on the shifted test set minus
    CE+likelihood's (``shift_accs[objective, s][split]``, the models trained on the patched images)."""
    return [shift_accs["ice", s]["shifted"] - shift_accs["ce_mle", s]["shifted"] for s in seeds]


@dataclasses.dataclass(frozen=True)
class SettingRun:
    """What the models of one setting (ours or the authors') measured: every mapping is keyed by
    ``(objective, seed)`` or by ``seed``. A plain CE model (ours only, one seed) shows in ``probes`` and
    ``shift`` under ``("ce", seed)``."""

    probes: Mapping
    """``{(objective, seed): post-hoc probe test accuracy on z_n}``."""
    untrained: Mapping
    """``{seed: the probe on the untrained INN's z_n}``."""
    nc_online: Mapping
    """``{seed: the online nuisance classifier's test accuracy at the end of iCE's training}``."""
    attacks: Mapping
    """``{(objective, seed): scored_metamers(...)}``."""
    gates: Mapping
    """``{(objective, seed): (passed, why)}`` of the invertibility gate."""
    shift: Mapping
    """``{(objective, seed): {"unshifted" | "shifted" | "no patch": test accuracy}}``."""
    untrained_name: str = "untrained INN"
    """How the claims table names the untrained INN of this setting."""

    @property
    def plain_ce_seed(self) -> int | None:
        """The seed of the plain CE model, if this setting trained one."""
        return next((s for o, s in self.probes if o == "ce"), None)


def replicates(run: SettingRun, raw: Mapping, seeds: Sequence[int]) -> dict[str, list]:
    """Every claim's per-seed replicates at one setting, by claim key (the keys of
    :data:`advbook.methods.invariance.CLAIMS`, in their order); ``raw[s]``: the raw-pixel probe."""
    ce_minus_untrained, _, gain = probe_differences(run.probes, run.untrained, raw, seeds)
    stat, _, look = gated_statistics(run.attacks, run.gates, seeds)
    return {"ce-label-in-zn": ce_minus_untrained, "ice-removes-label": gain, "metamers": stat,
            "ice-metamers-look": look, "ice-shift": shift_gain(run.shift, seeds)}


def nulls(run: SettingRun, raw: Mapping, seeds: Sequence[int]) -> dict[str, list]:
    """The null baselines' per-seed replicates at one setting, for the claims that have one
    (:data:`NULL_WHAT`)."""
    return {"ce-label-in-zn": probe_differences(run.probes, run.untrained, raw, seeds)[1],
            "metamers": gated_statistics(run.attacks, run.gates, seeds)[1]}


# ----------------------------------------------------------------------------- grading


def weight_deviations(nce_weight: float, chosen: bool) -> tuple[str, ...]:
    """The deviation our setting's iCE claims carry when the nuisance weight was set by hand
    (``-p nce_weight``) rather than chosen on the validation split (``chosen``); none otherwise."""
    return () if chosen else (f"nuisance weight set by hand ({nce_weight:g}), not chosen on a validation split",)


def grade_settings(key: str, values: Mapping[str, Sequence[float]], ours: Mapping[str, str],
                   settings: Sequence[str], deviations: Sequence[str] = ()) -> list[protocol.Graded]:
    """Claim ``key`` graded at every setting of ``settings`` as one family, with Holm's correction over
    the settings (:func:`advbook.protocol.grade_family`): member ``CLAIMS[key]`` at that setting
    (:func:`~advbook.methods.invariance.claim_at`) with the replicates ``values[setting]`` and the
    claims table's text ``ours[setting]``. ``deviations`` are added to an iCE claim (key ``ice-*``) of our
    setting (:func:`weight_deviations`). Returns the graded members in the order of ``settings``."""
    members = []
    for st in settings:
        claim = inv.claim_at(key, st)
        if deviations and st == "ours" and key.startswith("ice"):
            claim = dataclasses.replace(claim, deviations=claim.deviations + tuple(deviations))
        members.append((claim, values[st]))
    return protocol.grade_family(members, ours=[ours[st] for st in settings])


# ----------------------------------------------------------------------------- text


def evidence(run: SettingRun, seeds: Sequence[int], n_pairs: int, nce_weight: float | None = None) -> dict[str, str]:
    """What the claims table shows beside each claim's estimate at one setting (its ``ours`` text), by claim
    key: the measurements a statistic is the difference of, as ``mean [95% t-interval]`` over ``seeds``
    (:func:`advbook.protocol.mean_interval_text`); the plain CE model's numbers where the setting trained one
    (:attr:`SettingRun.plain_ce_seed`), and ``nce_weight`` where given."""
    ms = protocol.mean_interval_text
    over = lambda table, obj, field=None: ms([table[obj, s] if field is None else table[obj, s][field] for s in seeds])
    ce = run.plain_ce_seed
    label = f"probe CE+lik. {over(run.probes, 'ce_mle')}, {run.untrained_name} {ms([run.untrained[s] for s in seeds])}"
    removes = (f"probe CE+lik. {over(run.probes, 'ce_mle')}, iCE {over(run.probes, 'ice')}; online D_nc "
               f"{ms([run.nc_online[s] for s in seeds])}")
    shift = f"shifted: CE+lik. {over(run.shift, 'ce_mle', 'shifted')}, iCE {over(run.shift, 'ice', 'shifted')}; no patch: "
    if ce is not None:
        label += f"; plain CE (seed {ce}) {run.probes['ce', ce]:.3f}"
        removes += f"; plain CE minus iCE (seed {ce}) {run.probes['ce', ce] - run.probes['ice', ce]:+.3f}"
        shift += f"CE (seed {ce}) {run.shift['ce', ce]['no patch']:.3f}, "
    if nce_weight is not None:
        removes += f"; nuisance weight {nce_weight:g}"
    shift += f"CE+lik. {over(run.shift, 'ce_mle', 'no patch')}, iCE {over(run.shift, 'ice', 'no patch')}"
    return {"ce-label-in-zn": label, "ice-removes-label": removes,
            "metamers": metamer_evidence(run.attacks, run.gates, seeds, n_pairs),
            "ice-metamers-look": f"CNN sees x_a among kept metamers: CE+lik. "
                                 f"{over(run.attacks, 'ce_mle', 'sees_a_given_kept')}, iCE "
                                 f"{over(run.attacks, 'ice', 'sees_a_given_kept')}",
            "ice-shift": shift}


def metamer_evidence(attacks: Mapping, gates: Mapping, seeds: Sequence[int], n_pairs: int) -> str:
    """The ``metamers`` claim's text for the claims table: over the seeds whose CE+likelihood model passes
    the invertibility gate, how often ``F`` keeps its decision, what the CNN sees among the kept and the
    lost metamers and among the blends, and the unrestricted success against the independence product."""
    kept = [s for s in seeds if gates["ce_mle", s][0]]
    if not kept:
        return "no CE+likelihood model passes the invertibility gate"
    f = lambda k: protocol.mean_interval_text([attacks["ce_mle", s][k] for s in kept])
    return (f"CE+lik., {len(kept)} seed(s) passing the gate: F keeps its decision on {f('inn_keeps')}; among "
            f"those the CNN sees x_b on {f('sees_b_given_kept')} (on the others {f('sees_b_given_lost')}), the "
            f"blend {f('blend_sees_b_given_kept')}; unrestricted success {f('success')} vs independence "
            f"{f('independence')}; {n_pairs} pairs")


def settings_text(graded: Mapping[str, Mapping], key: str, settings: Sequence[str]) -> str:
    """Claim ``key`` at every setting of ``settings`` for the prose, from the graded records (results-JSON
    claims by key ``<key>@<setting>``): ``<estimate> [<95% interval>] over <n> seed(s), graded *<verdict>*
    (<the setting in words>)``, joined by ``"; "`` (:func:`advbook.protocol.estimate_text`)."""
    return "; ".join(f"{protocol.estimate_text(c)} over {c['n']} seed(s), graded *{c['verdict']}* "
                     f"({inv.SETTINGS[st]})" for st in settings for c in [graded[f"{key}@{st}"]])


__all__ = ["NULL_WHAT", "scored_metamers", "round_trips", "probe_differences", "gated_statistics", "shift_gain",
           "SettingRun", "replicates", "nulls", "weight_deviations", "grade_settings", "evidence",
           "metamer_evidence", "settings_text"]
