"""One decoding spec (§2.7, §2.8): the sampler's settings, checked once, split into static and traced.

:class:`DecodeSpec` holds what shapes the compiled loop (steps, schedules,
top-k, the ``[MASK]`` id): frozen and hashable, a static argument of
``eqx.filter_jit``. Guidance and temperatures are traced floats checked by
``check_scalars``, so changing them never recompiles. Every argument
check of the decoding package is here.
"""

from __future__ import annotations

import dataclasses
import math
import numbers

import jax
import jax.numpy as jnp
import numpy as np

from muse_mini.decoding import masking

__all__ = ["DECODING_VERSION", "DecodeSpec"]
GUIDANCE_SCHEDULES = ("constant", "linear")
# Bumped when the same settings start to sample differently (2: MaskGIT's
# choice-noise anneal), so stored evaluations of older samples are redone.
DECODING_VERSION = 2


def _is_traced(value) -> bool:
    return isinstance(value, jax.core.Tracer)


def check_steps(steps, name: str = "steps") -> None:
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 1:
        raise ValueError(f"{name}: expected an integer >= 1, got {steps!r}")


def check_real(name: str, value, *, low: float, strict: bool) -> None:
    """``value`` finite and ``> low`` (strict) or ``>= low``; traced values pass."""
    if _is_traced(value):
        return
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected a real number, got {value!r}") from None
    bad = not math.isfinite(v) or (v <= low if strict else v < low)
    if bad:
        relation = ">" if strict else ">="
        raise ValueError(f"{name}: expected a finite number {relation} {low}, got {value!r}")


def check_top_k(top_k, vocab_size: int) -> None:
    if top_k is None:
        return
    if isinstance(top_k, bool) or not isinstance(top_k, numbers.Integral):
        raise ValueError(f"top_k: expected None or an integer, got {top_k!r}")
    if not 1 <= top_k <= vocab_size:
        raise ValueError(f"top_k: expected 1 <= top_k <= vocab size {vocab_size}, got {top_k}")


def check_key(key, name: str = "key") -> None:
    """One PRNG key (``jax.random.key(seed)`` or a uint32 ``PRNGKey``), not a bare seed."""
    dtype, shape = getattr(key, "dtype", None), getattr(key, "shape", None)
    typed = dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key) and shape == ()
    if not (typed or (dtype == np.uint32 and shape == (2,))):
        got = f"{type(key).__name__} of dtype {dtype} and shape {shape}" if dtype is not None else repr(key)
        raise ValueError(f"{name}: expected one PRNG key such as jax.random.key(0), got {got}")


def check_schedule(schedule: str) -> None:
    if schedule not in masking.SCHEDULES:
        raise ValueError(
            f"schedule: unknown schedule {schedule!r}; expected one of {sorted(masking.SCHEDULES)}"
        )


def check_guidance(scale, schedule: str) -> None:
    if schedule not in GUIDANCE_SCHEDULES:
        raise ValueError(
            f"guidance_schedule: expected one of {list(GUIDANCE_SCHEDULES)}, got {schedule!r}"
        )
    if _is_traced(scale):
        return
    try:
        finite = math.isfinite(float(scale))
    except (TypeError, ValueError):
        raise ValueError(f"guidance: expected a real number, got {scale!r}") from None
    if not finite:
        raise ValueError(f"guidance: expected a finite guidance scale, got {scale!r}")


def check_scalars(*, temperature, choice_temperature, guidance=0.0) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The traced settings, checked on the host once, as float32 arrays ``(guidance, temperature, choice)``."""
    check_real("temperature", temperature, low=0.0, strict=True)
    check_real("choice_temperature", choice_temperature, low=0.0, strict=False)
    check_real("guidance", guidance, low=-np.inf, strict=False)
    return jnp.float32(guidance), jnp.float32(temperature), jnp.float32(choice_temperature)


#: How the confidence noise falls to 0: MaskGIT's ``c·(1 − (s+1)/T)``, or aMUSEd's ``c·(1 − s/(T−1))`` (its
#: scheduler's ``linspace(c, 0, T)``).
CHOICE_ANNEALS = ("maskgit", "amused")


@dataclasses.dataclass(frozen=True)
class DecodeSpec:
    """The static settings of one decoding. ``mask_id`` equals the vocabulary size, so ``top_k`` is checked against it."""

    steps: int
    mask_id: int
    schedule: str = "cosine"
    top_k: int | None = None
    guidance_schedule: str = "linear"
    choice_anneal: str = "maskgit"

    def __post_init__(self):
        check_steps(self.steps)
        check_schedule(self.schedule)
        if self.choice_anneal not in CHOICE_ANNEALS:
            raise ValueError(f"choice_anneal: expected one of {list(CHOICE_ANNEALS)}, got {self.choice_anneal!r}")
        m = self.mask_id
        if isinstance(m, bool) or not isinstance(m, numbers.Integral) or m < 1:
            raise ValueError(f"mask_id: expected an integer >= 1 (the vocabulary size), got {m!r}")
        check_top_k(self.top_k, m)
        check_guidance(0.0, self.guidance_schedule)

    @classmethod
    def from_sampler(cls, sampler, mask_id: int) -> "DecodeSpec":
        """The static half of a :class:`~muse_mini.config.schema.SamplerConfig`."""
        return cls(steps=sampler.steps, mask_id=mask_id, schedule=sampler.schedule, top_k=sampler.top_k,
                   guidance_schedule=sampler.guidance_schedule, choice_anneal=sampler.choice_anneal)


def sampler_scalars(sampler) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The traced half of a SamplerConfig: ``(guidance, temperature, choice_temperature)``."""
    return check_scalars(guidance=sampler.guidance, temperature=sampler.temperature,
                         choice_temperature=sampler.choice_temperature)
