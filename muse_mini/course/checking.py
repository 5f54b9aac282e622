"""The checkers' harness: call a learner's function safely, compare it with the library, say what is wrong.

A checker never raises because of the learner: a stub (``raise NotImplementedError``) is
"not written yet", any other exception is reported in one line, and a wrong answer is
named with a hint drawn from the mistakes learners commonly make.
"""

from __future__ import annotations

import html
import warnings
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

__all__ = ["CheckResult", "Exercise", "Wrong", "Learner", "run_check", "shape_of", "to_array", "expect_shape",
           "diagnose", "describe"]

NOT_WRITTEN = "not written yet — replace `raise NotImplementedError` with your code, then run this cell again"


@dataclass(frozen=True)
class CheckResult:
    """What a checker found: prints as ``✓ name: correct`` or ``✗ name: what is wrong — hint: ...``."""

    name: str
    passed: bool
    message: str

    def __bool__(self) -> bool:
        return self.passed

    def __repr__(self) -> str:
        return f"{'✓' if self.passed else '✗'} {self.name}: {self.message}"

    __str__ = __repr__

    def _repr_html_(self) -> str:
        colour = "#1a7f37" if self.passed else "#cf222e"
        return (f'<div style="font-family:monospace;font-size:13px;color:{colour}">'
                f"{html.escape(repr(self))}</div>")


@dataclass(frozen=True)
class Exercise:
    """One exercise: the notebook it sits in, the function the learner writes, its checker, §, task."""

    notebook: str
    name: str
    checker: Callable[[Callable], CheckResult]
    section: str
    task: str


class Wrong(Exception):
    """The learner's answer differs from the library's: ``what`` is wrong, and a ``hint``."""

    def __init__(self, what: str, hint: str = ""):
        super().__init__(what)
        self.what, self.hint = what, hint

    @property
    def message(self) -> str:
        return f"{self.what} — hint: {self.hint}" if self.hint else self.what


class _NotWritten(Exception):
    pass


class _Raised(Exception):
    """The learner's function raised: kept apart from the checker's own errors."""

    def __init__(self, call: str, err: BaseException, hint: str | None = None):
        first = (str(err).strip().splitlines() or [""])[0]
        if len(first) > 160:
            first = first[:157] + "..."
        message = f"{call} raised {type(err).__name__}" + (f": {first}" if first else "")
        if "Tracer" in type(err).__name__ or "Concretization" in type(err).__name__:
            message += (" — hint: use jax.numpy (jnp) and jax.lax.stop_gradient inside the function, not NumPy "
                        "or Python control flow on array values: the checker differentiates it with jax.grad")
        if hint:
            message += f" — hint: {hint}"
        super().__init__(message)


class Learner:
    """The learner's function, called so that its exceptions and warnings never escape the checker.

    ``learner(*args, call="nearest_code(z 3x4, codebook 5x4)", hint=...)`` returns its output; works inside
    ``jax.grad`` too (the exception is raised through the trace and caught by :func:`run_check`).
    """

    def __init__(self, name: str, fn: Callable):
        self.name, self.fn = name, fn

    def __call__(self, *args, call: str | None = None, hint: str | None = None):
        try:
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore")
                return self.fn(*args)
        except NotImplementedError as err:
            raise _NotWritten() from err
        except (Wrong, _NotWritten, _Raised):
            raise
        except Exception as err:  # the learner's bug, reported in one line
            raise _Raised(call or f"{self.name}(...)", err, hint) from err

    def probe(self, *args) -> None:
        """Call on cheap inputs before expensive library work, so a stub is reported at once; any other
        outcome is ignored here (the real cases judge it)."""
        try:
            self(*args)
        except _Raised:
            pass


def run_check(name: str, fn: Any, body: Callable[[Learner], str | None]) -> CheckResult:
    """Run ``body(learner)``, which raises :class:`Wrong` on a mismatch and may return a note on success."""
    if not callable(fn):
        return CheckResult(name, False, f"expected your function `{name}`, got {type(fn).__name__} — hint: pass "
                                        f"the function itself, `check_{name}({name})`, without calling it")
    try:
        note = body(Learner(name, fn))
    except _NotWritten:
        return CheckResult(name, False, NOT_WRITTEN)
    except _Raised as err:
        return CheckResult(name, False, str(err))
    except Wrong as wrong:
        return CheckResult(name, False, wrong.message)
    return CheckResult(name, True, "correct" + (f" ({note})" if note else ""))


# --------------------------------------------------------------------------
# Comparing outputs


def shape_of(x) -> str:
    """``3x4`` for an array, ``scalar`` for a 0-d one, the repr of anything else."""
    shape = np.shape(x)
    return "x".join(map(str, shape)) if shape else "scalar"


def describe(name: str, **args) -> str:
    """``name(z 3x4, beta=0.25)``: arrays by shape, scalars by value, for error messages."""
    parts = []
    for key, value in args.items():
        if np.ndim(value) == 0 and not hasattr(value, "dtype"):
            parts.append(f"{key}={value!r}")
        elif np.ndim(value) == 0:
            parts.append(f"{key}={np.asarray(value).item()!r}")
        else:
            parts.append(f"{key} {shape_of(value)}")
    return f"{name}({', '.join(parts)})"


def to_array(out, call: str, *, what: str = "an array") -> np.ndarray:
    """``out`` as a NumPy array, or :class:`Wrong` saying what came back instead."""
    if out is None:
        raise Wrong(f"{call} returned None", "end your function with `return ...`")
    if isinstance(out, tuple) and len(out) == 2 and what == "an array":
        raise Wrong(f"{call} returned a pair, expected {what}", "return one array, not a tuple")
    try:
        return np.asarray(out)
    except Exception as err:  # e.g. a ragged list
        raise Wrong(f"{call} returned {type(out).__name__}, expected {what}", str(err)) from err


def expect_shape(out: np.ndarray, shape: tuple, call: str, hint: str = "") -> None:
    if tuple(out.shape) != tuple(shape):
        want = "x".join(map(str, shape)) if shape else "a scalar"
        raise Wrong(f"{call} returned shape {shape_of(out) if out.shape else 'scalar'}, expected {want}", hint)


def _close(a, b, rtol: float, atol: float) -> bool:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return a.shape == b.shape and bool(np.allclose(a, b, rtol=rtol, atol=atol, equal_nan=False))


def diagnose(got, want, call: str, mistakes, *, rtol=1e-4, atol=1e-5, hint: str = "", what: str = "values"):
    """Raise :class:`Wrong` unless ``got`` matches ``want``; name the mistake whose output ``got`` matches.

    ``mistakes``: ``(wrong_output, what_is_wrong, hint)`` triples (``wrong_output`` may be a
    zero-argument callable, evaluated only on a mismatch).
    """
    if _close(got, want, rtol, atol):
        return
    for wrong, label, mistake_hint in mistakes:
        wrong = wrong() if callable(wrong) else wrong
        if wrong is not None and _close(got, wrong, rtol, atol) and not _close(wrong, want, rtol, atol):
            raise Wrong(f"{label}, on {call}", mistake_hint)
    raise Wrong(f"{what} differ from the library's on {call}: {_first_difference(got, want)}", hint)


def _first_difference(got, want) -> str:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    if got.shape != want.shape:
        return f"shape {shape_of(got)} vs {shape_of(want)}"
    if got.ndim == 0:
        return f"got {got.item():.6g}, expected {want.item():.6g}"
    bad = ~np.isclose(got, want, rtol=1e-4, atol=1e-5)
    index = tuple(int(i) for i in np.argwhere(bad)[0])
    return (f"{int(bad.sum())} of {bad.size} entries, first at {list(index)}: "
            f"got {got[index]:.6g}, expected {want[index]:.6g}")
