"""Text → image: the Muse cascade from run directories (Muse §2, Figure 3), and editing (§3.3).

prompt → frozen text encoder (§2.1) → base transformer, guided parallel decoding
(§2.7, §2.8) → super-res (§2.4) → VQGAN decoder (§2.2, §2.5) → pixels. Each
decoding is one compiled call; batches are padded to few sizes. The run's
``text-cache`` is read only: new prompts' embeddings stay in memory.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from muse_mini.config import EditConfig, MuseConfig, SamplerConfig, check_seed
from muse_mini.decoding.guidance import decode_guided, guided_contexts, superres_pass
from muse_mini.decoding.sampler import Trajectory
from muse_mini.editing.inputs import check_extend, read_batch
from muse_mini.editing.methods import EditModels, EditResult, check_paste_back, edit, inpaint
from muse_mini.editing.outpaint import outpaint
from muse_mini.models.codec import decode_token_batch
from muse_mini.models.text.cache import EmbeddingCache
from muse_mini.models.text.encoder import load_text_encoder
from muse_mini.parallel.mesh import mesh_size
from muse_mini.parallel.rules import BATCH_AXES, batch_sharding, place, state_shardings
from muse_mini.runs.load import load_base, load_superres, load_tokenizer, pipeline_runs
from muse_mini.runs.pretrained import load_stage, names_pretrained, read_index, resolve_pretrained

PAD_STEP = 32  # see padded_batch


@eqx.filter_jit
def _decode_images(vqgan, tokens_BxN):
    return decode_token_batch(vqgan, tokens_BxN)


@dataclasses.dataclass
class Generation:
    """The requested stage's images (uint8 B×H×W×3; prompt i's at rows ``i*num_per_prompt ...``), the
    base model's, and every decoding step (§2.8) for the widgets."""

    images: np.ndarray
    prompts: list[str]
    base_images: np.ndarray
    base_trajectory: Trajectory
    superres_trajectory: Trajectory | None = None


@dataclasses.dataclass
class Pipeline:
    """The trained cascade: :meth:`from_pretrained` (the shipped Shapes pipeline), :meth:`from_run` (a trained run)."""

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

    @property
    def models(self) -> EditModels:
        """The models editing runs, and this pipeline's placement of batches."""
        return EditModels(self.tokenizer, self.base, self.superres, self.highres_tokenizer, self.on_mesh)

    def _padded(self, batch: int) -> int:
        """`padded_batch`, then up to a multiple of the mesh's batch-parallel devices."""
        rows = padded_batch(batch)
        split = 1 if self.mesh is None else mesh_size(self.mesh, BATCH_AXES)
        return -(-rows // split) * split

    @classmethod
    def from_run(cls, run_dir, *, require_superres: bool = False, ema: bool = False, mesh=None) -> "Pipeline":
        """Every finished stage under ``run_dir``, with the tokenizers the stages recorded; a finished
        ``decoder/`` (§2.5) decodes the high-res tokens. ``ema``: offline EMA weights (§3)."""
        runs = pipeline_runs(run_dir, require_superres=require_superres)
        base, cfg = load_base(runs["base"], ema=ema)
        superres = load_superres(runs["superres"], ema=ema)[0] if "superres" in runs else None
        highres_tokenizer = load_tokenizer(runs.get("decoder", runs["highres_tokenizer"])) if superres else None
        encoder = EmbeddingCache(
            load_text_encoder(cfg.text.encoder, max_length=cfg.text.max_length),
            directory=Path(run_dir) / "text-cache", read_only=True,
        )
        return cls(cfg, encoder, load_tokenizer(runs["tokenizer"]), base, highres_tokenizer, superres, mesh)

    @classmethod
    def from_pretrained(cls, name_or_path, *, require_superres: bool = False, mesh=None) -> "Pipeline":
        """A pretrained pipeline: the shipped ``"shapes"``, a folder ``muse-mini export`` wrote, or a Hub repo id."""
        folder = resolve_pretrained(name_or_path)
        stages = read_index(folder)["stages"]
        base, cfg = load_stage(folder, "base")
        superres = highres_tokenizer = None
        if "superres" in stages:
            superres, _ = load_stage(folder, "superres")
            highres_tokenizer, _ = load_stage(folder, "decoder" if "decoder" in stages else "highres_tokenizer")
        elif require_superres:
            raise FileNotFoundError(f"name_or_path: {folder} holds no super-res stage")
        encoder = EmbeddingCache(load_text_encoder(cfg.text.encoder, max_length=cfg.text.max_length))
        return cls(cfg, encoder, load_stage(folder, "tokenizer")[0], base, highres_tokenizer, superres, mesh)

    @classmethod
    def load(cls, source, *, require_superres: bool = False, ema: bool = False, mesh=None) -> "Pipeline":
        """:meth:`from_run` for a run directory, else :meth:`from_pretrained` (a shipped name, export folder
        or Hub id): what the CLI's ``--run`` accepts."""
        if not names_pretrained(source):
            return cls.from_run(source, require_superres=require_superres, ema=ema, mesh=mesh)
        if ema:
            raise ValueError(f"ema: {source} is a pretrained pipeline; its weights are final (EMA applies to runs)")
        return cls.from_pretrained(source, require_superres=require_superres, mesh=mesh)

    @property
    def has_superres(self) -> bool:
        return self.superres is not None

    def encode(self, prompts: list[str]):
        """The condition for ``prompts``: frozen text embeddings and padding masks (§2.1)."""
        text, mask = self.text_encoder.encode(list(prompts))
        return jnp.asarray(text, jnp.float32), jnp.asarray(mask, bool)

    def guidance_contexts(self, context, negative_prompt: str | None = None):
        """``(context, uncond)`` on the mesh: ℓu sees ``negative_prompt`` (§2.7), or no text."""
        negative = None if negative_prompt is None else self.encode([negative_prompt])
        return self.on_mesh(guided_contexts(context, negative))

    def _contexts(self, prompts: list[str], negative_prompt: str | None):
        return self.guidance_contexts(self.encode(prompts), negative_prompt)

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
        """``num_per_prompt`` images per prompt; ``stage="base"`` stops at the low-res output.

        ``sampler_overrides`` (SamplerConfig's fields) change the run's base
        sampler; ``negative_prompt`` replaces the unconditional logits (§2.7).
        """
        prompts = _check_prompts(prompts)
        stage, sampler, superres_sampler = self._check_options(num_per_prompt, seed, stage, negative_prompt,
                                                               superres_sampler, sampler_overrides)
        batch = len(prompts) * num_per_prompt
        # Pad with copies of the last row: few batch shapes, few compilations.
        rows = np.minimum(np.arange(self._padded(batch)) // num_per_prompt, len(prompts) - 1)
        context = jax.tree.map(lambda x: x[rows], self.encode(prompts))
        context, uncond = self.guidance_contexts(context, negative_prompt)
        key_base, key_sr = jax.random.split(jax.random.key(seed))
        base_traj = decode_guided(self.base, context, uncond, key_base, sampler)
        base_images = np.asarray(_decode_images(self.tokenizer, base_traj.tokens_BxN))
        first = lambda tree: jax.tree.map(lambda x: x[:batch], tree)  # noqa: E731 -- drop the padding
        result = Generation(base_images[:batch], [p for p in prompts for _ in range(num_per_prompt)],
                            base_images[:batch], first(base_traj))
        if stage == "superres":
            sr_traj = superres_pass(self.superres, base_traj.tokens_BxN, context, key_sr, superres_sampler)
            result.superres_trajectory = first(sr_traj)
            result.images = np.asarray(_decode_images(self.highres_tokenizer, sr_traj.tokens_BxN))[:batch]
        return result

    def _check_options(self, num_per_prompt, seed, stage, negative_prompt, superres_sampler, overrides):
        """The options every generation and edit shares; returns (stage, base sampler, super-res sampler)."""
        if isinstance(num_per_prompt, bool) or not isinstance(num_per_prompt, int) or num_per_prompt < 1:
            raise ValueError(f"num_per_prompt: expected an integer >= 1, got {num_per_prompt!r}")
        check_seed("seed", seed)
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
        return stage, dataclasses.replace(self.cfg.sampler, **overrides), superres_sampler or self.cfg.superres_sampler

    __call__ = generate

    def inpaint(self, image, mask, prompt, *, seed: int = 0, stage: str | None = None,
                negative_prompt: str | None = None, superres_sampler: SamplerConfig | None = None,
                reduce: str = "any", paste_back: bool = False, **sampler_overrides) -> EditResult:
        """Regenerate ``mask`` (True or white = regenerate) of ``image`` under ``prompt`` (§3.3.1); at the
        super-res size the edit is multi-scale. ``paste_back``: the input's own pixels outside the mask."""
        if mask is None:
            raise ValueError("mask: expected a boolean (H, W) array, or a PNG whose white marks what to regenerate, "
                             "got None (outpaint or generate need no mask)")
        stage, sampler, superres_sampler = self._check_options(1, seed, stage, negative_prompt, superres_sampler,
                                                               sampler_overrides)
        batch = read_batch(image, prompt, self.models.sizes, mask=mask)
        check_paste_back(self.models, paste_back, stage, batch.images.shape[1])
        return inpaint(self.models, batch, self._contexts(batch.prompts, negative_prompt), key=jax.random.key(seed),
                       stage=stage, sampler=sampler, superres_sampler=superres_sampler, reduce=reduce,
                       paste_back=paste_back)

    def outpaint(self, image, prompt, *, extend: str | None = None, by: int | None = None, keep=None,
                 seed: int = 0, stage: str | None = None, negative_prompt: str | None = None,
                 superres_sampler: SamplerConfig | None = None, paste_back: bool = False,
                 **sampler_overrides) -> EditResult:
        """Generate around ``image`` (§3.3.1): ``extend`` it ``by`` pixels (of its size) past an edge,
        or regenerate everything outside ``keep`` (a mask, True or white = keep) inside the frame."""
        if (keep is None) == (extend is None):
            raise ValueError("keep, extend: give keep= (a mask of the pixels to keep, inside the frame) "
                             "or extend= with by= (grow the frame), not both or neither")
        stage, sampler, superres_sampler = self._check_options(1, seed, stage, negative_prompt, superres_sampler,
                                                               sampler_overrides)
        batch = read_batch(image, prompt, self.models.sizes, mask=keep, mask_name="keep")
        side = batch.images.shape[1]
        check_paste_back(self.models, paste_back, stage, side)
        options = dict(key=jax.random.key(seed), stage=stage, sampler=sampler, superres_sampler=superres_sampler,
                       paste_back=paste_back)
        if keep is not None:
            batch = dataclasses.replace(batch, masks=~batch.masks)
            return inpaint(self.models, batch, self._contexts(batch.prompts, negative_prompt), **options)
        check_extend(extend, by, side)
        return outpaint(self.models, batch, self._contexts(batch.prompts, negative_prompt), extend=extend, by=by,
                        **options)

    def edit(self, image, prompt, *, seed: int = 0, stage: str | None = None, negative_prompt: str | None = None,
             superres_sampler: SamplerConfig | None = None, **settings) -> EditResult:
        """Mask-free editing (§3.3.2): walk ``image``'s tokens towards ``prompt``, with no mask.

        ``settings`` (``iterations``, ``resample_fraction``, ``top_k``, ``guidance``, ``temperature``)
        change the run's ``cfg.edit``. Every iteration is kept (``EditResult.iteration_images``, Figure 12).
        """
        stage, _, superres_sampler = self._check_options(1, seed, stage, negative_prompt, superres_sampler, {})
        unknown = set(settings) - {f.name for f in dataclasses.fields(EditConfig)}
        if unknown:
            raise ValueError(f"unknown editing settings {sorted(unknown)}")
        settings = dataclasses.replace(self.cfg.edit, **settings)
        batch = read_batch(image, prompt, self.models.sizes)
        return edit(self.models, batch, self._contexts(batch.prompts, negative_prompt), key=jax.random.key(seed),
                    stage=stage, settings=settings, superres_sampler=superres_sampler)


def padded_batch(batch: int, *, step: int = PAD_STEP) -> int:
    """The batch ``batch`` rows are decoded at: the next power of two up to ``step``, then the next
    multiple of ``step``, so few batch sizes compile and large ones waste fewer than ``step`` rows."""
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch: expected an integer >= 1, got {batch!r}")
    return 1 << (batch - 1).bit_length() if batch <= step else -(-batch // step) * step


def _check_prompts(prompts) -> list[str]:
    """A string or an iterable of strings as a list (empty strings are left to the text encoder)."""
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
