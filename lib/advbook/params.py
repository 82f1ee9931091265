"""Chapter parameters: profiles, validation and the resolved configuration.

Every notebook has a cell tagged ``parameters`` holding plain values (papermill
overrides them). The first code cell after it calls :func:`resolve`, which

1. checks every value against the chapter's schema *before any work is done*, so
   ``papermill ... -p epochs -3`` fails in a second with a message that names the
   parameter and what is allowed, never a traceback from deep inside torch;
2. picks the profile (:func:`advbook.profiles.resolve`: ``auto`` means ``full`` when CUDA is present, else
   ``quick``; a runner that started the kernel has resolved it already);
3. fills every value left as ``None`` from that profile's defaults.

Names shared by all chapters (``profile``, ``device``, ``precision``, ``seed``, ``dataset``,
``epochs``, ``eps``) are declared once in :data:`COMMON`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Mapping

from .precision import PRECISIONS
from .profiles import NAMES as PROFILE_NAMES
from .profiles import resolve as resolve_profile



class ParameterError(ValueError):
    """A chapter parameter has an unknown name or a value outside what is allowed."""


@dataclass(frozen=True)
class Choice:
    """One of a fixed set of values."""

    options: tuple

    def check(self, name: str, value: Any) -> Any:
        if value not in self.options:
            allowed = ", ".join(repr(o) for o in self.options)
            raise ParameterError(f"parameter {name!r} = {value!r} is not allowed; allowed values: {allowed}")
        return value

    def describe(self) -> str:
        return "one of " + ", ".join(repr(o) for o in self.options)


@dataclass(frozen=True)
class Number:
    """An int or float in ``[low, high]`` (either bound may be ``None``)."""

    kind: type = float
    low: float | None = None
    high: float | None = None

    def check(self, name: str, value: Any) -> Any:
        ok_type = isinstance(value, (int, float)) and not isinstance(value, bool)
        if self.kind is int:
            ok_type = ok_type and float(value).is_integer()
        if not ok_type or (isinstance(value, float) and not math.isfinite(value)):
            raise ParameterError(f"parameter {name!r} = {value!r} must be {self.describe()}")
        if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
            raise ParameterError(f"parameter {name!r} = {value!r} is out of range; allowed: {self.describe()}")
        return self.kind(value)

    def describe(self) -> str:
        what = "an integer" if self.kind is int else "a number"
        lo = "-inf" if self.low is None else self.low
        hi = "inf" if self.high is None else self.high
        return f"{what} in [{lo}, {hi}]"


@dataclass(frozen=True)
class ListOf:
    """A non-empty list whose every element satisfies ``item``."""

    item: Any

    def check(self, name: str, value: Any) -> Any:
        if not isinstance(value, (list, tuple)) or not value:
            raise ParameterError(f"parameter {name!r} = {value!r} must be a non-empty list of {self.item.describe()}")
        return [self.item.check(f"{name}[{i}]", v) for i, v in enumerate(value)]

    def describe(self) -> str:
        return f"a non-empty list of {self.item.describe()}"


DATASETS = ("mnist5k", "mnist", "fashion", "cifar10")

COMMON: dict[str, Any] = {
    "profile": Choice(PROFILE_NAMES),
    "device": Choice(("auto", "cpu", "cuda")),
    "precision": Choice(PRECISIONS),
    "seed": Number(int, 0, 2**31 - 1),
    "dataset": Choice(DATASETS),
    "epochs": Number(int, 1, 1000),
    "eps": Number(float, 0.0, 1.0),
}


class _Same:
    """The marker of a profile that keeps the ``quick`` value (:class:`Param`)."""

    def __repr__(self) -> str:
        return "SAME"


SAME = _Same()


@dataclass(frozen=True)
class Param:
    """One chapter parameter, declared once, beside its method (:func:`declare`).

    ``quick``: its value in the quick profile (``None``: the reference recipe's, for ``epochs`` / ``eps``);
    ``allowed``: what it accepts (a :class:`Choice`, :class:`Number` or :class:`ListOf`; ``None`` for a
    name of :data:`COMMON`, whose spec it keeps); ``doc``: one line, the comment of the notebook's
    parameters cell and of ``advbook list``; ``long`` / ``full`` / ``tiny``: that profile's value where
    it differs from ``quick``.
    """

    quick: Any
    allowed: Any = None
    doc: str = ""
    long: Any = SAME
    full: Any = SAME
    tiny: Any = SAME

    def value(self, profile: str) -> Any:
        """The value under ``profile`` (``quick``'s unless the profile sets its own)."""
        own = getattr(self, profile)
        return self.quick if own is SAME else own


@dataclass(frozen=True)
class Declaration:
    """A chapter's parameters (:func:`declare`): ``profiles`` and ``schema`` as :func:`resolve` takes them,
    the one-line ``docs``, and :meth:`cell`, the source of the notebook's parameters cell."""

    parameters: Mapping[str, Param]

    @property
    def profiles(self) -> dict[str, dict[str, Any]]:
        """``{profile: {name: value}}`` for every profile of :data:`advbook.profiles.PROFILES`."""
        return {profile: {name: p.value(profile) for name, p in self.parameters.items()}
                for profile in ("quick", "long", "full", "tiny")}

    @property
    def schema(self) -> dict[str, Any]:
        """What each chapter-specific parameter allows (the names of :data:`COMMON` keep COMMON's spec unless
        the chapter declares its own)."""
        return {name: p.allowed for name, p in self.parameters.items() if p.allowed is not None}

    @property
    def docs(self) -> dict[str, str]:
        return {name: p.doc for name, p in self.parameters.items()}

    def cell(self) -> str:
        """The notebook's ``parameters`` cell: the common names, then every declared one as ``name = None  #
        doc`` (``None``: the profile's value); papermill overrides them, :func:`resolve` fills them in."""
        lines = [f"{name} = {json.dumps(value)}  # {doc}" if doc else f"{name} = {json.dumps(value)}"
                 for name, value, doc in CELL_HEAD]
        lines += [f"{name} = None  # {p.doc}" if p.doc else f"{name} = None" for name, p in self.parameters.items()]
        return "\n".join(lines)


CELL_HEAD = (("profile", "auto", "auto | quick | long | full | tiny"), ("device", "auto", "auto | cpu | cuda"),
             ("precision", "fp32", "training arithmetic: fp32 | bf16 | auto (bf16 where the device has it); "
                                   "attacks always run in fp32"),
             ("seed", 0, "the run's first seed (models, optimisation); the data split is the same for every seed"))
"""The first lines of every chapter's parameters cell: the names every chapter has, with their values."""


def declare(**parameters: Param) -> Declaration:
    """A chapter's parameters, each declared once with its quick value, bounds, doc and per-profile values.

    A methods module writes ``PARAMETERS = declare(n_eval=Param(300, Number(int, 10, 10**5), "test images
    attacked", full=2000, tiny=40), ...)`` and ``PROFILES, SCHEMA = PARAMETERS.profiles, PARAMETERS.schema``;
    the notebook's parameters cell is ``PARAMETERS.cell()`` (written by ``make strip``; a test says they
    agree). Adding a parameter is one line here.
    """
    for name, p in parameters.items():
        if not isinstance(p, Param):
            raise TypeError(f"parameter {name!r} must be declared as a Param, got {p!r}")
        if p.allowed is None and name not in COMMON:
            raise TypeError(f"parameter {name!r} needs `allowed` (only the names of COMMON have a spec already)")
        if name in {head for head, *_ in CELL_HEAD}:
            raise TypeError(f"parameter {name!r} is in every chapter's parameters cell already")
    return Declaration(dict(parameters))


class Config(dict):
    """The resolved parameters of one chapter run: a dict with attribute access."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError as exc:
            raise AttributeError(name) from exc


def resolve(
    given: Mapping[str, Any],
    profiles: Mapping[str, Mapping[str, Any]],
    schema: Mapping[str, Any] | None = None,
) -> Config:
    """Validate ``given`` (the notebook's parameter values) and fill defaults.

    ``profiles`` maps ``quick`` / ``full`` / ``tiny`` to that profile's defaults;
    ``schema`` adds chapter-specific specs to :data:`COMMON`. A value of ``None``
    means "use the profile default". Unknown names are rejected.
    """
    spec = dict(COMMON)
    spec.update(schema or {})
    unknown = sorted(set(given) - set(spec))
    if unknown:
        raise ParameterError(f"unknown parameter(s) {unknown}; allowed: {sorted(spec)}")
    profile = resolve_profile(given.get("profile", "auto"))
    if profile not in profiles:
        raise ParameterError(f"profile {profile!r} is not defined for this chapter; allowed: {sorted(profiles)}")
    out = Config(profiles[profile])
    for name, default, _ in CELL_HEAD[1:]:  # device, precision and seed, as every parameters cell sets them
        out.setdefault(name, default)
    for name, value in given.items():
        if value is not None:
            out[name] = value
    out["profile"] = profile
    for name, value in list(out.items()):
        if name not in spec:
            raise ParameterError(f"profile {profile!r} sets unknown parameter {name!r}")
        if value is not None:
            out[name] = spec[name].check(name, value)
    return out


def describe(schema: Mapping[str, Any] | None = None) -> dict[str, str]:
    """Human-readable description of every allowed parameter."""
    spec = dict(COMMON)
    spec.update(schema or {})
    return {name: s.describe() for name, s in sorted(spec.items())}


