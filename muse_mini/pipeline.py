"""Text → image: the whole Muse cascade, loaded from run directories (Muse §2, Figure 3).

prompt → frozen text encoder (§2.1) → base transformer, decoded in parallel
with classifier-free guidance (§2.7, §2.8) → low-res tokens → super-res
translator (§2.4), decoded the same way → high-res tokens → VQGAN decoder (§2.2,
§2.5) → pixels.

Each decoding is one compiled call (:func:`muse_mini.decoding.sampler.decode` under
``eqx.filter_jit``); guidance scale, temperatures and prompts are traced arrays,
so changing them does not recompile. Only the number of steps, the schedule
names, ``top_k`` and the batch size are compile-time constants. To keep the
batch sizes few, :meth:`Pipeline.generate` pads ``len(prompts) *
num_per_prompt`` up to :func:`padded_batch` (repeating the last row) and
slices the padding off the result, so a new number of prompts seldom
recompiles.

Prompts are embedded through the run's precomputed ``text-cache`` (written
while training), which the pipeline only reads: embeddings of new prompts are
kept in memory, so sampling never rewrites that file nor writes into a run
directory that may be read-only or shared.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from muse_mini.config import MuseConfig, SamplerConfig
from muse_mini.decoding.guided import (  # noqa: F401 (decode_guided: re-exported for the benchmarks)
    decode_guided, decode_with_sampler, guided_contexts, superres_pass,
)
from muse_mini.decoding.sampler import Trajectory
from muse_mini.editing import EditResult, edit, inpaint, outpaint
from muse_mini.models.codec import decode_token_batch
from muse_mini.models.text.cache import EmbeddingCache
from muse_mini.models.text.encoder import load_text_encoder
from muse_mini.parallel.mesh import mesh_size
from muse_mini.parallel.rules import BATCH_AXES, batch_sharding, place, state_shardings
from muse_mini.runs.layout import read_run_config, stage_complete
from muse_mini.runs.load import check_finetuned_from, load_base, load_superres, load_tokenizer

STAGE_DIRS = {
    "tokenizer": "tokenizer-base",
    "highres_tokenizer": "tokenizer-highres",
    "base": "base",
    "superres": "superres",
    "decoder": "decoder",
}
PAD_STEP = 32  # see padded_batch


@eqx.filter_jit
def _decode_images(vqgan, tokens_BxN):
    return decode_token_batch(vqgan, tokens_BxN)


@dataclasses.dataclass
class Generation:
    """What :meth:`Pipeline.generate` returns.

    ``images`` are the requested stage's outputs (uint8, B×H×W×3), with the
    samples of prompt i at rows ``i*num_per_prompt ...``. The trajectories hold
    every decoding step (§2.8) for the widgets.
    """

    images: np.ndarray
    prompts: list[str]
    base_images: np.ndarray
    base_trajectory: Trajectory
    superres_trajectory: Trajectory | None = None


@dataclasses.dataclass
class Pipeline:
    """The trained cascade. Build it with :meth:`from_run` on a pipeline directory."""

    cfg: MuseConfig
    text_encoder: Any
    tokenizer: Any
    base: Any
    highres_tokenizer: Any = None
    superres: Any = None
    mesh: Any = None  # a jax.sharding.Mesh: generate splits the batch over its data × fsdp devices

    def __post_init__(self):
        if self.mesh is not None:  # transformer weights by the rules table, tokenizers replicated
            for name in ("base", "superres", "tokenizer", "highres_tokenizer"):
                model = getattr(self, name)
                if model is not None:
                    setattr(self, name, place(model, state_shardings(model, self.mesh)))

    def on_mesh(self, tree):
        """Batch-leading arrays split over the mesh's batch axes (no-op without a mesh)."""
        if self.mesh is None:
            return tree
        return jax.tree.map(lambda x: jax.device_put(x, batch_sharding(self.mesh, x.ndim)), tree)

    def _padded(self, batch: int) -> int:
        """`padded_batch`, then up to a multiple of the mesh's batch-parallel devices."""
        rows = padded_batch(batch)
        split = 1 if self.mesh is None else mesh_size(self.mesh, BATCH_AXES)
        return -(-rows // split) * split

    @classmethod
    def from_run(cls, run_dir, *, require_superres: bool = False, ema: bool = False, mesh=None) -> "Pipeline":
        """Load every finished stage under ``run_dir`` (e.g. ``runs/demo``).

        ``ema``: the base and super-res models' offline EMA weights (§3,
        ``model_ema.eqx``, written by ``muse-mini ema``) instead of the final ones.

        The tokenizers are the runs the base and super-res stages were trained
        on, as their ``config.json`` records them (``tokenizer_run``,
        ``highres_tokenizer_run``); runs without the record use the sibling
        ``tokenizer-base/`` and ``tokenizer-highres/``.

        When ``decoder/`` holds a finished §2.5 finetuned decoder of this
        pipeline's high-res tokenizer, it replaces that tokenizer: same encoder
        and codebook, larger decoder, so the 64×64 output is decoded by it.
        ``mesh`` (`muse_mini.parallel.mesh.make_mesh`): sample with the batch
        split over its devices; the tokens are those one device gives.
        """
        run_dir = Path(run_dir)
        dirs = {name: run_dir / sub for name, sub in STAGE_DIRS.items()}
        if not stage_complete(dirs["base"]):  # name the first stage to train
            first = "base" if stage_complete(dirs["tokenizer"]) else "tokenizer"
            raise FileNotFoundError(f"run_dir: {dirs[first]} holds no finished {first} run; "
                                    "train the pipeline first (make demo, or muse-mini train-base)")
        tokenizer_dir, where = input_run(dirs["base"], "tokenizer_run", dirs["tokenizer"])
        if not stage_complete(tokenizer_dir):
            raise FileNotFoundError(f"run_dir: {tokenizer_dir}{where} holds no finished tokenizer run; "
                                    "train the pipeline first (make demo, or muse-mini train-tokenizer)")
        base, cfg = load_base(dirs["base"], ema=ema)
        highres_tokenizer = superres = None
        missing = f"{dirs['superres']} holds no finished super-res run"
        if stage_complete(dirs["superres"]):
            highres_dir, where = input_run(dirs["superres"], "highres_tokenizer_run", dirs["highres_tokenizer"])
            missing = f"{highres_dir}{where} holds no finished high-res tokenizer run"
            if stage_complete(highres_dir):
                missing = None
                superres, _ = load_superres(dirs["superres"], ema=ema)
                if stage_complete(dirs["decoder"]):
                    check_finetuned_from(dirs["decoder"], highres_dir)
                    highres_dir = dirs["decoder"]
                highres_tokenizer = load_tokenizer(highres_dir)
        if missing and require_superres:
            raise FileNotFoundError(f"run_dir: {missing}")
        encoder = EmbeddingCache(
            load_text_encoder(cfg.text.encoder, max_length=cfg.text.max_length),
            directory=run_dir / "text-cache", read_only=True,
        )
        return cls(cfg, encoder, load_tokenizer(tokenizer_dir), base, highres_tokenizer, superres, mesh)

    @property
    def has_superres(self) -> bool:
        return self.superres is not None

    def encode(self, prompts: list[str]):
        """Frozen text embeddings and padding masks for ``prompts`` (§2.1)."""
        text, mask = self.text_encoder.encode(list(prompts))
        return jnp.asarray(text, jnp.float32), jnp.asarray(mask, bool)

    def guidance_contexts(self, context, negative_prompt: str | None = None):
        """``(context, uncond)`` on the mesh: ℓu sees ``negative_prompt`` (§2.7), or no text."""
        negative = None if negative_prompt is None else self.encode([negative_prompt])
        return self.on_mesh(guided_contexts(context, negative))

    def generate(
        self,
        prompts,
        *,
        num_per_prompt: int = 1,
        seed: int = 0,
        stage: str | None = None,
        negative_prompt: str | None = None,
        superres_sampler: SamplerConfig | None = None,
        **sampler_overrides,
    ) -> Generation:
        """Generate ``num_per_prompt`` images per prompt (a string or a list of strings).

        ``sampler_overrides`` (``steps``, ``guidance``, ``guidance_schedule``,
        ``temperature``, ``top_k``, ``choice_temperature``, ``schedule``) change
        the base sampler; ``stage="base"`` stops at the low-res output, the
        default runs super-res when the pipeline has it. ``negative_prompt``
        replaces the unconditional logits of guidance (§2.7).
        """
        prompts = _check_prompts(prompts)
        stage, sampler = self._check_options(num_per_prompt, seed, stage, negative_prompt,
                                             superres_sampler, sampler_overrides)
        batch = len(prompts) * num_per_prompt
        text, mask = self.encode(prompts)
        # Pad with copies of the last row: few batch shapes, few compilations.
        rows = np.minimum(np.arange(self._padded(batch)) // num_per_prompt, len(prompts) - 1)
        context, uncond = self.guidance_contexts((text[rows], mask[rows]), negative_prompt)
        key_base, key_sr = jax.random.split(jax.random.key(seed))
        base_traj = decode_with_sampler(self.base, context, uncond, key_base, sampler)
        base_images = np.asarray(_decode_images(self.tokenizer, base_traj.tokens_BxN))
        first = lambda tree: jax.tree.map(lambda x: x[:batch], tree)  # noqa: E731 -- drop the padding
        result = Generation(base_images[:batch], [p for p in prompts for _ in range(num_per_prompt)],
                            base_images[:batch], first(base_traj))
        if stage == "superres":
            sr_traj = superres_pass(self.superres, base_traj.tokens_BxN, context, key_sr,
                                    superres_sampler or self.cfg.superres_sampler, images=self.on_mesh(base_images))
            result.superres_trajectory = first(sr_traj)
            result.images = np.asarray(_decode_images(self.highres_tokenizer, sr_traj.tokens_BxN))[:batch]
        return result

    def _check_options(self, num_per_prompt, seed, stage, negative_prompt, superres_sampler, overrides):
        """Host-side checks of :meth:`generate`'s options; returns (stage, base sampler)."""
        if isinstance(num_per_prompt, bool) or not isinstance(num_per_prompt, int) or num_per_prompt < 1:
            raise ValueError(f"num_per_prompt: expected an integer >= 1, got {num_per_prompt!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**32:
            raise ValueError(f"seed: expected an integer in [0, 2**32), got {seed!r}")
        if negative_prompt is not None and (not isinstance(negative_prompt, str) or not negative_prompt.strip()):
            raise ValueError(f"negative_prompt: expected None or a non-empty string, got {negative_prompt!r}")
        if superres_sampler is not None and not isinstance(superres_sampler, SamplerConfig):
            raise ValueError(f"superres_sampler: expected a SamplerConfig, got {type(superres_sampler).__name__}")
        stage = stage or ("superres" if self.has_superres else "base")
        if stage not in ("base", "superres"):
            raise ValueError(f"stage: expected 'base' or 'superres', got {stage!r}")
        if stage == "superres" and not self.has_superres:
            raise ValueError("stage: 'superres' asked for, but this pipeline has no trained super-res model")
        unknown = set(overrides) - {f.name for f in dataclasses.fields(SamplerConfig)}
        if unknown:
            raise ValueError(f"unknown sampler options {sorted(unknown)}")
        return stage, dataclasses.replace(self.cfg.sampler, **overrides)

    __call__ = generate

    def inpaint(self, image, mask, prompt, *, seed: int = 0, stage: str | None = None,
                negative_prompt: str | None = None, superres_sampler: SamplerConfig | None = None,
                reduce: str = "any", paste_back: bool = False, **sampler_overrides) -> EditResult:
        """Regenerate the masked part of ``image`` under ``prompt`` (§3.3.1); the rest keeps its tokens.

        ``image``: a path, PIL image or uint8 array (or a list or batch of them) at the base
        or the super-res size. ``mask``: True, or white in a PNG, where to regenerate; a token
        is regenerated when any pixel of its patch is (``reduce="all"``: every pixel). At the
        super-res size the edit is multi-scale: the base model inpaints the decimated image's
        tokens, then super-res inpaints the high-res tokens conditioned on them.
        ``paste_back=True`` puts the input's own pixels back outside the mask (the decoder
        otherwise shifts them slightly near the edit). Sampler options are :meth:`generate`'s.
        """
        stage, sampler = self._check_options(1, seed, stage, negative_prompt, superres_sampler, sampler_overrides)
        return inpaint(self, image, mask, prompt, stage=stage, sampler=sampler, reduce=reduce, paste_back=paste_back,
                       superres_sampler=superres_sampler or self.cfg.superres_sampler,
                       negative_prompt=negative_prompt, seed=seed)

    def outpaint(self, image, prompt, *, extend: str | None = None, by: int | None = None, keep=None,
                 seed: int = 0, stage: str | None = None, negative_prompt: str | None = None,
                 superres_sampler: SamplerConfig | None = None, paste_back: bool = False,
                 **sampler_overrides) -> EditResult:
        """Generate around ``image`` (§3.3.1): past its frame, or outside a kept region inside it.

        ``extend`` (``"left"``, ``"right"``, ``"up"``, ``"down"``) with ``by`` pixels (of the
        input's size) grows the frame, in overlapping windows of the model's size; the output
        is ``by`` pixels wider or taller. ``keep`` (a mask, True or white = keep) instead
        regenerates everything else in the frame. ``paste_back=True`` keeps the input's own
        pixels where it lies, as :meth:`inpaint` does.
        """
        stage, sampler = self._check_options(1, seed, stage, negative_prompt, superres_sampler, sampler_overrides)
        return outpaint(self, image, prompt, stage=stage, sampler=sampler, keep=keep, extend=extend, by=by,
                        paste_back=paste_back,
                        superres_sampler=superres_sampler or self.cfg.superres_sampler,
                        negative_prompt=negative_prompt, seed=seed)

    def edit(self, image, prompt, *, iterations: int = 100, resample_fraction: float = 0.08,
             guidance: float = 4.0, top_k: int | None = 3, temperature: float = 1.0, seed: int = 0,
             stage: str | None = None, negative_prompt: str | None = None,
             superres_sampler: SamplerConfig | None = None) -> EditResult:
        """Mask-free editing (§3.3.2): move ``image`` towards ``prompt`` with no mask.

        Each of ``iterations`` steps masks a random ``resample_fraction`` of the base tokens
        and resamples them under the prompt (top-k, constant guidance): the paper's 100
        iterations of 8%, top-k 3, guidance 4. The result keeps every iteration
        (``EditResult.iteration_images(i)``), so one can stop at 50 or 75 (Figure 12). With
        super-res, the final base tokens are translated to high resolution.
        """
        stage, _ = self._check_options(1, seed, stage, negative_prompt, superres_sampler, {})
        return edit(self, image, prompt, stage=stage, iterations=iterations, resample_fraction=resample_fraction,
                    guidance=guidance, top_k=top_k, temperature=temperature, negative_prompt=negative_prompt,
                    superres_sampler=superres_sampler or self.cfg.superres_sampler, seed=seed)


def input_run(stage_dir: Path, key: str, default: Path) -> tuple[Path, str]:
    """The input run a stage recorded under ``key`` in its ``config.json`` (else ``default``),
    and for errors where that path came from.

    Training records it relative to the stage (``relative_run_path``, lexical), so it is
    resolved the same way: a tokenizer trained elsewhere (``--tokenizer-run``) is found,
    and a pipeline copied whole points at its own copies. Runs without the record
    use the sibling directory.
    """
    recorded = read_run_config(stage_dir)["metadata"].get(key)
    if not recorded:
        return default, ""
    path = Path(os.path.normpath(os.path.join(os.path.abspath(stage_dir), recorded)))
    return path, f" (recorded as {key}={recorded!r} in {stage_dir / 'config.json'})"


def padded_batch(batch: int, *, step: int = PAD_STEP) -> int:
    """The batch size ``batch`` rows are decoded at: the next power of two up to ``step``, then the
    next multiple of ``step``. Small batches share a handful of compilations; large ones waste
    fewer than ``step`` rows (so the demo's evaluation batches, multiples of it, are not padded)."""
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch: expected an integer >= 1, got {batch!r}")
    return 1 << (batch - 1).bit_length() if batch <= step else -(-batch // step) * step


def _check_prompts(prompts) -> list[str]:
    """A string or an iterable of strings (not a mapping or bytes), as a list; a ValueError names what is wrong.

    Empty strings are left to the text encoder, whose error gives their index.
    """
    if isinstance(prompts, str):
        prompts = [prompts]
    if isinstance(prompts, (bytes, Mapping)) or not isinstance(prompts, Iterable):
        raise ValueError(f"prompts: expected a string or a list of strings, got {type(prompts).__name__}")
    prompts = list(prompts)
    if not prompts:
        raise ValueError("prompts: expected at least one prompt, got an empty list")
    for i, prompt in enumerate(prompts):
        if not isinstance(prompt, str):
            raise ValueError(f"prompts[{i}]: expected a string, got {type(prompt).__name__}")
    return prompts
