"""`muse-mini params`: counts against the paper, without allocating weights."""

import gc

import jax
import pytest

from muse_mini.cli import main
from muse_mini.config import get_preset
from muse_mini.models.params import count_params


def _counts(preset, overrides=()):
    return {c.name: c.params for c in count_params(get_preset(preset, overrides))}


def test_paper_3b_counts_match_the_paper_and_allocate_nothing():
    gc.collect()  # earlier tests' garbage must not be freed mid-count
    before = len(jax.live_arrays())
    counts = _counts("paper-3b")
    assert len(jax.live_arrays()) == before  # eval_shape only: no weight exists
    assert counts["base"] == pytest.approx(3e9, rel=0.10)  # Table 4: the 3B base model
    assert counts["text_encoder"] == pytest.approx(4.6e9, rel=0.05)  # §3: T5-XXL, 4.6B
    assert all(isinstance(v, int) and v > 0 for v in counts.values())


def test_cc3m_counts_match_table_1():
    counts = _counts("cc3m")
    assert counts["base"] == pytest.approx(632e6, rel=0.10)
    assert counts["superres"] == pytest.approx(268e6, rel=0.10)


def test_the_finetuned_decoder_has_the_sizes_of_appendix_a2():
    """§A.2: the finetuned decoder has 4 blocks and 256 channels where the tokenizer's has 2 and 128.
    Doubling every width quadruples each conv kernel and doubling the blocks roughly doubles the
    middle, so it is 5-9× the tokenizer's own decoder."""
    import equinox as eqx

    from muse_mini.models.params import count_leaves
    from muse_mini.models.vqgan import VQGAN

    cfg = get_preset("paper-3b")
    own = count_leaves(eqx.filter_eval_shape(VQGAN, cfg.highres_tokenizer, key=jax.random.key(0)).decoder)
    ratio = _counts("paper-3b")["decoder"] / own
    assert 5 < ratio < 9, ratio
    assert _counts("paper-3b", ["decoder.res_blocks=2", "decoder.channels=128"])["decoder"] == own


def test_overrides_change_counts():
    assert _counts("toy", ["base.depth=8"])["base"] > _counts("toy")["base"]


def test_cli_prints_every_component(capsys):
    assert main(["params", "--preset", "toy", "--base.depth=2"]) == 0
    out = capsys.readouterr().out
    for name in ("text_encoder", "tokenizer", "highres_tokenizer", "base", "superres", "decoder"):
        assert name in out
    assert "2 layers" in out


def test_cli_reports_bad_override_in_one_line(capsys):
    assert main(["params", "--preset", "toy", "base.depht=2"]) == 2
    err = capsys.readouterr().err
    assert "has no field 'depht'" in err and "Traceback" not in err
