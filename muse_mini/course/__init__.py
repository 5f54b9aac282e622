"""Exercises for notebooks 00-05 and their checkers: ``check_<name>(fn)`` runs the learner's ``fn`` on
random inputs (fixed seeds), compares it with the library, and returns a
:class:`~muse_mini.course.checking.CheckResult` that prints ``✓ <name>: correct`` or
``✗ <name>: what is wrong — hint: ...``. It never raises for the learner: a stub that raises
``NotImplementedError`` is "not written yet".

``EXERCISES`` lists them in course order (notebook, function, checker, paper section, task).
"""

from muse_mini.course.checking import CheckResult, Exercise
from muse_mini.course.decoding import (
    check_guidance_scale, check_guided_logits, check_tokens_kept, check_tokens_to_remask,
)
from muse_mini.course.editing import check_paste_back, check_token_mask
from muse_mini.course.masking import check_mask_rate, check_masked_loss, check_num_masked
from muse_mini.course.superres import check_psnr, check_superres_context
from muse_mini.course.text import check_cosine_similarity, check_masked_mean_pool
from muse_mini.course.tokenizer import check_nearest_code, check_straight_through, check_vq_loss
from muse_mini.course import decoding, editing, masking, superres, text, tokenizer

EXERCISES: tuple[Exercise, ...] = (
    text.EXERCISES + tokenizer.EXERCISES + masking.EXERCISES + decoding.EXERCISES + superres.EXERCISES
    + editing.EXERCISES
)


def exercise(name: str) -> Exercise:
    """The exercise whose learner function is called ``name``."""
    for ex in EXERCISES:
        if ex.name == name:
            return ex
    raise ValueError(f"exercise: unknown name {name!r}; expected one of {[ex.name for ex in EXERCISES]}")


__all__ = [
    "CheckResult", "EXERCISES", "Exercise", "exercise",
    "check_masked_mean_pool", "check_cosine_similarity",
    "check_nearest_code", "check_straight_through", "check_vq_loss",
    "check_mask_rate", "check_num_masked", "check_masked_loss",
    "check_guided_logits", "check_guidance_scale", "check_tokens_kept", "check_tokens_to_remask",
    "check_superres_context", "check_psnr",
    "check_token_mask", "check_paste_back",
]
