"""The exercise checkers: each accepts its solution, rejects plausible wrong answers with the right hint,
reports a stub or a crash in one line without raising; the registry and ``muse-mini course``."""

import importlib.util
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from muse_mini import course
from muse_mini.cli import main

SOLUTIONS = Path(__file__).resolve().parent.parent / "notebooks" / "solutions"


def _load(path: Path):
    spec = importlib.util.spec_from_file_location(f"_solutions_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SOLUTION_MODULES = {path.stem[2:4]: _load(path) for path in sorted(SOLUTIONS.glob("nb*.py"))}


def _solution(ex):
    return getattr(SOLUTION_MODULES[ex.notebook], ex.name)


def test_registry_has_two_or_three_exercises_in_each_of_notebooks_00_to_05():
    assert len(course.EXERCISES) >= 12
    per_notebook = {nb: sum(ex.notebook == nb for ex in course.EXERCISES) for nb in ("00", "01", "02", "03", "04", "05")}
    assert all(2 <= n <= 4 for n in per_notebook.values()), per_notebook
    names = [ex.name for ex in course.EXERCISES]
    assert len(set(names)) == len(names)
    notebooks = [ex.notebook for ex in course.EXERCISES]
    assert notebooks == sorted(notebooks), "EXERCISES is in course order"
    for ex in course.EXERCISES:
        assert getattr(course, f"check_{ex.name}") is ex.checker
        assert ex.section.startswith("§") and ex.task
        assert callable(_solution(ex)), f"no solution for {ex.name} in notebooks/solutions/nb{ex.notebook}_*.py"
    assert course.exercise("psnr").notebook == "04"
    with pytest.raises(ValueError, match="unknown name 'nope'"):
        course.exercise("nope")


@pytest.mark.parametrize("ex", course.EXERCISES, ids=lambda ex: ex.name)
def test_checker_accepts_the_solution(ex):
    result = ex.checker(_solution(ex))
    assert result.passed, repr(result)
    assert bool(result) and repr(result).startswith(f"✓ {ex.name}: correct")


def _stub(*args):
    raise NotImplementedError  # your code


@pytest.mark.parametrize("ex", course.EXERCISES, ids=lambda ex: ex.name)
def test_a_stub_is_not_written_yet_and_never_raises(ex):
    result = ex.checker(_stub)
    assert not result.passed and "not written yet" in result.message
    assert repr(result).startswith(f"✗ {ex.name}: not written yet")
    assert "not written yet" in result._repr_html_()


def test_an_exception_in_the_learner_is_reported_in_one_line():
    def broken(cond, uncond, t):
        raise ValueError("boom\nsecond line")

    result = course.check_guided_logits(broken)
    assert not result.passed
    assert "raised ValueError: boom" in result.message and "\n" not in result.message
    assert "Traceback" not in result.message
    # A signature mistake is the learner's too.
    result = course.check_psnr(lambda a: a)
    assert not result.passed and "raised TypeError" in result.message


def test_numpy_inside_a_differentiated_function_gets_a_hint():
    result = course.check_straight_through(lambda z, z_q: z + np.asarray(z_q - z))
    assert not result.passed and "jax.numpy" in result.message


def test_passing_the_result_instead_of_the_function_is_explained():
    result = course.check_psnr(3.0)
    assert not result.passed and "pass the function itself" in result.message


def _flipped_guidance(cond, uncond, t):
    return cond - t * (cond - uncond)


def _sg(x):
    return jax.lax.stop_gradient(x)


def _nb05_transposed(mask, grid):
    h, w = mask.shape
    return mask.reshape(grid, h // grid, grid, w // grid).any(axis=(1, 3)).T


# (exercise, wrong answer, words the message must hold)
WRONG = [
    ("masked_mean_pool", lambda emb, mask: emb.mean(1), "averaged over the padding"),
    ("cosine_similarity", lambda a, b: a @ b.T, "dot products, not cosines"),
    ("nearest_code", lambda z, c: jnp.argmax(((z[:, None] - c[None]) ** 2).sum(-1), axis=1), "FARTHEST"),
    ("nearest_code", lambda z, c: jnp.argmax(z @ c.T, axis=1), "largest dot product"),
    ("straight_through", lambda z, z_q: z_q, "no gradient reaches z"),
    ("straight_through", lambda z, z_q: z_q + z - _sg(z), "also flows into z_q"),
    ("straight_through", lambda z, z_q: z, "the value is z, not z_q"),
    ("vq_loss", lambda z, e, beta: jnp.mean((z - e) ** 2) + beta * jnp.mean((z - _sg(e)) ** 2),
     "missing stop-gradient: the codebook term also pulls z"),
    ("vq_loss", lambda z, e, beta: beta * jnp.mean((_sg(z) - e) ** 2) + jnp.mean((z - _sg(e)) ** 2),
     "beta weighs the wrong term"),
    ("vq_loss", lambda z, e, beta: jnp.sum((_sg(z) - e) ** 2) + beta * jnp.sum((z - _sg(e)) ** 2), "summed"),
    ("mask_rate", lambda u: u, "uniform rate"),
    ("mask_rate", lambda u: 1 - 2 / jnp.pi * jnp.arccos(u), "the CDF, not its inverse"),
    ("num_masked", lambda rate, n: min(max(math.floor(rate * n), 1), n), "rounded down"),
    ("num_masked", lambda rate, n: math.ceil(rate * n), "rate 0 masks no token"),
    ("masked_loss", lambda logits, targets, mask: jnp.mean(
        -jnp.take_along_axis(jax.nn.log_softmax(logits), targets[..., None], -1)), "every token, masked or not"),
    ("guided_logits", _flipped_guidance, "guidance sign is flipped"),
    ("guided_logits", _flipped_guidance, "moves AWAY from the unconditional logits"),
    ("guided_logits", lambda c, u, t: t * c + (1 - t) * u, "interpolated"),
    ("guidance_scale", lambda step, steps, t_max: t_max * step / steps, "off by one: the last step"),
    ("guidance_scale", lambda step, steps, t_max: t_max * (step + 1) / steps, "off by one: at step 0"),
    ("guidance_scale", lambda step, steps, t_max: t_max * step / (steps - 1), "steps = 1"),
    ("tokens_kept", lambda step, steps, n: n - math.floor(n * math.cos(math.pi / 2 * step / steps)), "off by one"),
    ("tokens_kept", lambda step, steps, n: n - math.floor(n * math.cos(math.pi / 2 * (step + 1) / steps)),
     "at least one more token at every step"),
    ("tokens_kept", lambda step, steps, n: math.floor(n * math.cos(math.pi / 2 * (step + 1) / steps)),
     "still MASKED"),
    ("tokens_to_remask", lambda conf, n: jnp.argsort(jnp.argsort(-conf)) < n, "kept the least confident"),
    ("tokens_to_remask", lambda conf, n: jnp.argsort(conf)[:n], "indices"),
    ("superres_context", lambda text, mask, low: (jnp.concatenate([low, text], 1), mask), "covers the text only"),
    ("superres_context", lambda text, mask, low: (
        jnp.concatenate([low, text], 1), jnp.concatenate([jnp.zeros(low.shape[:2], bool), mask], 1)), "masked out"),
    ("psnr", lambda a, b: 10 * np.log10(255**2 / np.mean((a - b) ** 2)), "uint8 arithmetic wrapped around"),
    ("psnr", lambda a, b: 10 * np.log10(1 / np.mean((a.astype(float) - b) ** 2)), "peak value"),
    ("token_mask", lambda m, g: m.reshape(g, m.shape[0] // g, g, m.shape[1] // g).all(axis=(1, 3)), "any->all"),
    ("token_mask", _nb05_transposed, "rows and columns are swapped"),
    ("paste_back", lambda orig, gen, mask: np.where(mask[..., None], orig, gen), "OUTSIDE the mask"),
]


@pytest.mark.parametrize("name, wrong, words", WRONG, ids=[f"{n}-{w}" for n, _, w in WRONG])
def test_checker_rejects_a_plausible_wrong_answer_with_its_hint(name, wrong, words):
    result = getattr(course, f"check_{name}")(wrong)
    assert not result.passed, f"{name} accepted a wrong answer"
    assert words in result.message, result.message
    assert "hint:" in result.message


def test_every_checker_has_a_wrong_answer_tested():
    assert {name for name, _, _ in WRONG} == {ex.name for ex in course.EXERCISES}


def test_answers_right_up_to_a_convention_pass_with_a_note():
    # sin(π/2·u) is the arccos distribution too (1 − u is uniform), and text-first attends the same keys.
    result = course.check_mask_rate(lambda u: jnp.sin(jnp.pi / 2 * u))
    assert result.passed and "in distribution" in result.message
    result = course.check_superres_context(lambda text, mask, low: (
        jnp.concatenate([text, low], 1), jnp.concatenate([mask, jnp.ones(low.shape[:2], bool)], 1)))
    assert result.passed and "text first" in result.message
    # Ties may be broken either way: a stable sort from the other end picks other equal entries.
    result = course.check_tokens_to_remask(lambda conf, n: jnp.argsort(jnp.argsort(conf[::-1]))[::-1] < n)
    assert result.passed, repr(result)


def test_cli_lists_the_exercises(capsys):
    assert main(["course", "list"]) == 0
    out = capsys.readouterr().out
    assert all(ex.name in out for ex in course.EXERCISES) and "§2.7" in out


def test_cli_checks_the_solutions_folder(capsys):
    assert main(["course", "check", str(SOLUTIONS)]) == 0
    out = capsys.readouterr().out
    assert out.count("✓") == len(course.EXERCISES) and f"{len(course.EXERCISES)} of" in out


def test_cli_fails_a_wrong_file_naming_the_check(tmp_path, capsys):
    answers = tmp_path / "answers.py"
    answers.write_text("def guided_logits(cond, uncond, t):\n    return cond - t * (cond - uncond)\n\n"
                       "def psnr(a, b):\n    raise NotImplementedError\n")
    assert main(["course", "check", str(answers)]) == 1
    out = capsys.readouterr().out
    assert "✗ guided_logits: the guidance sign is flipped" in out and "✗ psnr: not written yet" in out
    assert "0 of 2 checks passed" in out


def test_cli_refuses_a_file_with_no_exercise_in_one_line(tmp_path, capsys):
    other = tmp_path / "other.py"
    other.write_text("def unrelated():\n    return 1\n")
    assert main(["course", "check", str(other)]) == 2
    err = capsys.readouterr().err
    assert str(other) in err and "nearest_code" in err and len(err.strip().splitlines()) == 1
    broken = tmp_path / "broken.py"
    broken.write_text("def psnr(a, b)\n")
    assert main(["course", "check", str(broken)]) == 1
    assert "could not be imported: SyntaxError" in capsys.readouterr().out
