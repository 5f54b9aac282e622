"""muse_mini: a small, readable JAX/Equinox reproduction of Muse (Chang et al., 2023).

One module per paper concept:

- ``config``       presets from ``toy`` to ``paper-3b``
- ``shapes``, ``evaluator``, ``data``   the Shapes world and dataset views
- ``text``, ``t5``, ``bert``            frozen text encoders (§2.1)
- ``quantizer``, ``vqgan``, ``perceptual``   the VQGAN tokenizer (§2.2, §2.5)
- ``masking``      arccos masking rates and decoding schedules (§2.6)
- ``transformer``  the base masked transformer (§2.3)
- ``superres``     the super-resolution token translator (§2.4)
- ``guidance``     classifier-free guidance and negative prompts (§2.7)
- ``sampler``      iterative parallel decoding (§2.8)
- ``editing``      inpainting, outpainting, mask-free editing (§3.3)
- ``training``, ``checkpoint``   the shared trainer
- ``pipeline``     text -> image, loading every stage from a run directory
- ``widgets``      the decoding viewer
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
