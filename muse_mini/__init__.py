"""muse_mini: a small, readable JAX/Equinox reproduction of Muse (Chang et al., 2023).

Sub-packages by role; imports point down this list:

- ``config``      frozen dataclass configs, presets from ``toy`` to ``paper-3b``, overrides
- ``models``      the networks: ``quantizer``, ``vqgan``, ``perceptual`` (the VQGAN tokenizer,
  §2.2, §2.5), ``codec`` (image <-> tokens), ``transformer`` (base model, §2.3),
  ``superres`` (§2.4), ``build`` and ``params``, and ``text`` (frozen T5 / BERT
  encoders and the embedding cache, §2.1)
- ``data``        the Shapes world (``shapes``: pixels; ``captions``: caption grammar),
  the caption ``evaluator``, and Hugging Face ``sources``
- ``decoding``    ``masking`` schedules (§2.6), ``guidance`` (§2.7), the parallel-decoding
  ``sampler`` (§2.8) and ``editing`` (§3.3)
- ``training``    the trainer ``loop``, the ``tokenizer`` / ``base`` / ``superres`` stages,
  ``token_data`` and ``losses``
- ``runs``        run directories: checkpoint format, layout, weights, inference ``load``
- ``viz``         figures and the decoding-viewer widgets
- ``pipeline``    text -> image from a run directory (imports no training code);
  ``demo`` and ``notebook`` build on it
- ``cli``         the ``muse-mini`` command (argparse only)
"""

import os

# transformers announces "PyTorch was not found" on import; muse_mini uses it
# only for tokenizers and configs, never for torch models, so the notice is noise.
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from muse_mini.config import MuseConfig, get_preset  # noqa: E402

__version__ = "0.1.0"
__all__ = ["MuseConfig", "Pipeline", "get_preset"]


def __getattr__(name):
    # Pipeline pulls in every stage; import it only when asked for.
    if name == "Pipeline":
        from muse_mini.pipeline import Pipeline

        return Pipeline
    raise AttributeError(f"module 'muse_mini' has no attribute {name!r}")
