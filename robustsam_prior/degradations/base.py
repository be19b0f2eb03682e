"""The degradation registry, parameter tables and result types.

Every degradation is a :class:`Degradation` entry: a per-image function with explicit keyword
parameters (``HxWx3`` float32 numpy in [0, 1] in, :class:`Out` out) plus ONE table of parameter
ranges per severity (:class:`ParamRange`). ``degrade --list``, the documentation and the sampler in
:func:`robustsam_prior.degradations.degrade` all read that table, so they cannot disagree.

Severity 1..5: each parameter is drawn uniformly from the range of the chosen severity. The
ranges of the official RobustSAM generator (``data/augment.py``) sit at severity 3 unless a table says otherwise.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from robustsam_prior.core.registry import Registry

SEVERITIES = (1, 2, 3, 4, 5)


@dataclass(frozen=True)
class ParamRange:
    """One parameter of a degradation: a (low, high) range for each severity 1..5.

    A value is drawn uniformly in [low, high] (integers: inclusive on both ends); low == high means
    a fixed value. ``bounds`` is the domain where the parameter makes sense at all (None = open);
    explicit values outside it are rejected by the registered function.
    """

    name: str
    ranges: tuple[tuple[float, float], ...]
    unit: str = ""
    help: str = ""
    integer: bool = False
    bounds: tuple[float | None, float | None] = (None, None)

    def __post_init__(self) -> None:
        if len(self.ranges) != len(SEVERITIES):
            raise ValueError(
                f"parameter {self.name!r}: need {len(SEVERITIES)} ranges, got {len(self.ranges)}"
            )
        for lo, hi in self.ranges:
            if hi < lo:
                raise ValueError(f"parameter {self.name!r}: range ({lo}, {hi}) is reversed")
            if not (self.contains(lo) and self.contains(hi)):
                raise ValueError(
                    f"parameter {self.name!r}: range ({lo}, {hi}) leaves its bounds {self.bounds}"
                )

    def contains(self, value: Any) -> bool:
        """True if every element of ``value`` lies within ``bounds``."""
        v = np.asarray(value, dtype=np.float64)
        lo, hi = self.bounds
        return bool(
            np.isfinite(v).all() and (lo is None or (v >= lo).all()) and (hi is None or (v <= hi).all())
        )

    def range_for(self, severity: int) -> tuple[float, float]:
        return self.ranges[severity - 1]

    def sample(self, severity: int, rng: np.random.Generator) -> float | int:
        lo, hi = self.range_for(severity)
        if self.integer:
            return int(rng.integers(int(lo), int(hi) + 1))
        return float(lo) if lo == hi else float(rng.uniform(lo, hi))

    def format_range(self, severity: int) -> str:
        lo, hi = self.range_for(severity)
        fmt = (lambda v: f"{int(v)}") if self.integer else (lambda v: f"{v:.4g}")
        return fmt(lo) if lo == hi else f"{fmt(lo)}..{fmt(hi)}"


def same(lo: float, hi: float) -> tuple[tuple[float, float], ...]:
    """The same range at every severity (for directions, angles and the like)."""
    return ((lo, hi),) * len(SEVERITIES)


@dataclass
class Out:
    """What a per-image degradation function returns (numpy, one image).

    Attributes:
        image: ``HxWx3`` float32 in [0, 1].
        transmission: ``HxW`` float32 in [0, 1] for scattering degradations (haze, fog), else None.
        airlight: ``(3,)`` float32 for scattering degradations, else None.
        kernel: ``kxk`` float32 summing to 1 for kernel blurs, else None.
        labels: the warped ``HxW`` label map for geometric degradations given labels, else None.
        extra: further JSON-able values drawn inside the function (recorded in ``params``).
    """

    image: np.ndarray
    transmission: np.ndarray | None = None
    airlight: np.ndarray | None = None
    kernel: np.ndarray | None = None
    labels: np.ndarray | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Degradation:
    """A registered degradation.

    Attributes:
        name: registry name.
        family: noise | blur | weather | digital | geometric | haze.
        fn: ``fn(image HxWx3, *, rng, labels=None, **params) -> Out``; ``labels`` is only passed to
            geometric degradations.
        params: the parameter table (one range per severity per parameter).
        summary: one line for ``--list`` and the docs.
        reference: where the recipe or the ranges come from.
        geometric: True when the image is warped (labels must follow with nearest sampling).
    """

    name: str
    family: str
    fn: Callable[..., Out]
    params: tuple[ParamRange, ...]
    summary: str
    reference: str = ""
    geometric: bool = False

    def sample(self, severity: int, rng: np.random.Generator) -> dict[str, float | int]:
        """Draw one value per parameter for ``severity`` (in table order, so seeds are stable)."""
        return {p.name: p.sample(severity, rng) for p in self.params}

    def param(self, name: str) -> ParamRange:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(f"{self.name} has no parameter {name!r}; it has {[p.name for p in self.params]}")


DEGRADATIONS: Registry[Degradation] = Registry("degradation")


def register(
    name: str,
    *,
    family: str,
    params: tuple[ParamRange, ...] | list[ParamRange],
    summary: str,
    reference: str = "",
    geometric: bool = False,
) -> Callable[[Callable[..., Out]], Callable[..., Out]]:
    """Decorator: register a per-image function under ``name`` with its parameter table."""

    table = tuple(params)

    def deco(fn: Callable[..., Out]) -> Callable[..., Out]:
        @functools.wraps(fn)
        def checked(image: np.ndarray, **kwargs: Any) -> Out:
            for p in table:
                if p.name in kwargs and not p.contains(kwargs[p.name]):
                    lo, hi = p.bounds
                    span = f"[{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}]"
                    raise ValueError(f"{name}: {p.name} must be in {span}, got {kwargs[p.name]!r}")
            return fn(image, **kwargs)

        DEGRADATIONS.add(
            name,
            Degradation(
                name=name,
                family=family,
                fn=checked,
                params=table,
                summary=summary,
                reference=reference,
                geometric=geometric,
            ),
        )
        return checked

    return deco


def check_image(x: np.ndarray, what: str = "image") -> np.ndarray:
    """Validate an ``HxWx3`` float image in [0, 1] and return it as contiguous float32."""
    x = np.asarray(x)
    if x.ndim != 3 or x.shape[2] != 3:
        raise ValueError(f"{what} must be HxWx3, got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"{what} must be float in [0, 1], got dtype {x.dtype}")
    return np.ascontiguousarray(x, dtype=np.float32)


def clip01(x: np.ndarray) -> np.ndarray:
    return np.clip(x, 0.0, 1.0, out=x).astype(np.float32, copy=False)
