"""muse_mini: a small, readable JAX/Equinox reproduction of Muse (Chang et al., 2023).

Sub-packages by role; imports point down this list:

- ``hub``         the Hugging Face hub's offline switch, shared by every loader
- ``config``      frozen dataclass configs, presets from ``toy`` to ``paper-3b``, recipes, overrides
- ``data``        the Shapes world and its caption ``evaluator``; real image-text data (§4.1)
- ``models``      the VQGAN tokenizer (``quantizer``, ``vqgan``, ``perceptual``, ``codec``; §2.2, §2.5),
  the base ``transformer`` (§2.3), ``superres`` (§2.4), the frozen ``text`` encoders (§2.1, CLIP among them)
  and aMUSEd's U-ViT and VQ-GAN (``models/amused``)
- ``runs``        run directories: checkpoint format, layout, weights, offline EMA, inference ``load``;
  ``pretrained`` folders (safetensors per stage) and ``export``; the shipped ones live in ``pretrained/``
- ``parallel``    the device mesh, the sharding rules table, many hosts
- ``decoding``    masking schedules (§2.6), guidance (§2.7), the parallel-decoding sampler (§2.8)
- ``training``    the trainer loop and its hooks; the tokenizer, base and super-res stages
- ``editing``     inpainting, outpainting and mask-free editing with a pipeline (§3.3)
- ``pipeline``    text -> image from a pretrained folder or a run directory (imports no training code)
- ``amused``      aMUSEd's open weights (Patil et al., 2024) as a ``Pipeline``: the same decoding and editing
- ``viz``         figures and the decoding and editing widgets
- ``evaluation``  Shapes-FID, Inception FID / CLIP score, the evaluate report, the paper's claims
- ``planner``     will a config train on a mesh? its compiled step's memory and time
- ``course``      the notebooks' exercises: checkers that compare a learner's function with the library
- ``demo``, ``notebook``, ``cli``  ``make demo``, the notebooks' settings, the ``muse-mini`` command
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
