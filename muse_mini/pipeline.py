"""Text → image: the whole Muse cascade, loaded from run directories (Muse §2, Figure 3).

prompt → frozen text encoder (§2.1) → base transformer, decoded in parallel
with classifier-free guidance (§2.7, §2.8) → low-res tokens → super-res
translator (§2.4), decoded the same way → high-res tokens → VQGAN decoder (§2.2,
§2.5) → pixels.

Each decoding is one compiled call (:func:`muse_mini.decoding.sampler.decode` under
``eqx.filter_jit``); guidance scale, temperatures and prompts are traced arrays,
so changing them does not recompile. Only the number of steps, the schedule
names and the batch size are compile-time constants.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from muse_mini.config import MuseConfig, SamplerConfig
from muse_mini.decoding.guidance import (
    BatchedModel, classifier_free_guidance, negative_prompt_context, unconditional_context,
)
from muse_mini.decoding.sampler import Trajectory, check_real, check_steps, check_top_k, decode
from muse_mini.models.codec import decode_token_batch
from muse_mini.models.superres import lowres_condition
from muse_mini.models.text.encoder import EmbeddingCache, load_text_encoder
from muse_mini.runs.layout import stage_complete
from muse_mini.runs.load import check_finetuned_from, load_base, load_superres, load_tokenizer

STAGE_DIRS = {
    "tokenizer": "tokenizer-base",
    "highres_tokenizer": "tokenizer-highres",
    "base": "base",
    "superres": "superres",
    "decoder": "decoder",
}


@eqx.filter_jit
def _decode_guided(model, context, uncond, key, mask_id: int, sampler: SamplerConfig,
                   guidance, temperature, choice_temperature):
    """One compiled decoding, start to finish, with guidance wrapped around the model."""
    batch = jax.tree.leaves(context)[0].shape[0]
    seq_len = model.seq_len
    logits_fn = classifier_free_guidance(
        BatchedModel(model), cond=context, uncond=uncond, scale=guidance,
        schedule=sampler.guidance_schedule, steps=sampler.steps,
    )
    tokens = jnp.full((batch, seq_len), mask_id, jnp.int32)
    return decode(
        logits_fn, tokens, jnp.ones((batch, seq_len), bool), key=key, steps=sampler.steps,
        mask_id=mask_id, schedule=sampler.schedule, temperature=temperature,
        top_k=sampler.top_k, choice_temperature=choice_temperature,
    )


def decode_with_sampler(model, context, uncond, key, sampler: SamplerConfig) -> Trajectory:
    """Validate ``sampler`` on the host (clear errors), then run the compiled decoding."""
    check_steps(sampler.steps)
    check_real("temperature", sampler.temperature, low=0.0, strict=True)
    check_real("choice_temperature", sampler.choice_temperature, low=0.0, strict=False)
    check_real("guidance", sampler.guidance, low=-np.inf, strict=False)
    check_top_k(sampler.top_k, model.mask_id)  # mask_id == vocabulary size
    static = dataclasses.replace(sampler, guidance=0.0, temperature=1.0, choice_temperature=0.0)
    return _decode_guided(
        model, context, uncond, key, model.mask_id, static,
        jnp.float32(sampler.guidance), jnp.float32(sampler.temperature),
        jnp.float32(sampler.choice_temperature),
    )


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

    @classmethod
    def from_run(cls, run_dir, *, require_superres: bool = False) -> "Pipeline":
        """Load every finished stage under ``run_dir`` (e.g. ``runs/demo``).

        When ``decoder/`` holds a finished §2.5 finetuned decoder of this
        pipeline's high-res tokenizer, it replaces that tokenizer: same encoder
        and codebook, larger decoder, so the 64×64 output is decoded by it.
        """
        run_dir = Path(run_dir)
        dirs = {name: run_dir / sub for name, sub in STAGE_DIRS.items()}
        for name in ("tokenizer", "base"):
            if not stage_complete(dirs[name]):
                raise FileNotFoundError(
                    f"run_dir: {dirs[name]} holds no finished {name} run; "
                    "train the pipeline first (make demo, or muse-mini train-base)"
                )
        base, cfg = load_base(dirs["base"])
        highres_tokenizer = superres = None
        if stage_complete(dirs["superres"]) and stage_complete(dirs["highres_tokenizer"]):
            superres, _ = load_superres(dirs["superres"])
            highres_dir = dirs["highres_tokenizer"]
            if stage_complete(dirs["decoder"]):
                check_finetuned_from(dirs["decoder"], highres_dir)
                highres_dir = dirs["decoder"]
            highres_tokenizer = load_tokenizer(highres_dir)
        elif require_superres:
            raise FileNotFoundError(f"run_dir: {dirs['superres']} holds no finished super-res run")
        encoder = EmbeddingCache(
            load_text_encoder(cfg.text.encoder, max_length=cfg.text.max_length),
            directory=run_dir / "text-cache",
        )
        return cls(cfg, encoder, load_tokenizer(dirs["tokenizer"]), base, highres_tokenizer, superres)

    @property
    def has_superres(self) -> bool:
        return self.superres is not None

    def encode(self, prompts: list[str]):
        """Frozen text embeddings and padding masks for ``prompts`` (§2.1)."""
        text, mask = self.text_encoder.encode(list(prompts))
        return jnp.asarray(text, jnp.float32), jnp.asarray(mask, bool)

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
        """Generate ``num_per_prompt`` images per prompt.

        ``sampler_overrides`` (``steps``, ``guidance``, ``guidance_schedule``,
        ``temperature``, ``top_k``, ``choice_temperature``, ``schedule``) change
        the base sampler; ``stage="base"`` stops at the low-res output, the
        default runs super-res when the pipeline has it.
        """
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        if not prompts:
            raise ValueError("prompts: expected at least one prompt, got an empty list")
        if isinstance(num_per_prompt, bool) or not isinstance(num_per_prompt, int) or num_per_prompt < 1:
            raise ValueError(f"num_per_prompt: expected an integer >= 1, got {num_per_prompt!r}")
        stage = stage or ("superres" if self.has_superres else "base")
        if stage not in ("base", "superres"):
            raise ValueError(f"stage: expected 'base' or 'superres', got {stage!r}")
        if stage == "superres" and not self.has_superres:
            raise ValueError("stage: 'superres' asked for, but this pipeline has no trained super-res model")
        unknown = set(sampler_overrides) - {f.name for f in dataclasses.fields(SamplerConfig)}
        if unknown:
            raise ValueError(f"unknown sampler options {sorted(unknown)}")
        sampler = dataclasses.replace(self.cfg.sampler, **sampler_overrides)

        text, mask = self.encode(prompts)
        text = jnp.repeat(text, num_per_prompt, axis=0)
        mask = jnp.repeat(mask, num_per_prompt, axis=0)
        context = (text, mask)
        if negative_prompt is not None:
            neg_text, neg_mask = self.encode([negative_prompt])
            uncond = negative_prompt_context(context, neg_text[0], neg_mask[0])
        else:
            uncond = unconditional_context(context)
        key_base, key_sr = jax.random.split(jax.random.key(seed))
        base_traj = decode_with_sampler(self.base, context, uncond, key_base, sampler)
        base_images = np.asarray(_decode_images(self.tokenizer, base_traj.tokens_BxN))
        result = Generation(base_images, [p for p in prompts for _ in range(num_per_prompt)],
                            base_images, base_traj)
        if stage == "superres":
            sr_sampler = superres_sampler or self.cfg.superres_sampler
            lowres = lowres_condition(self.superres, base_traj.tokens_BxN, images=base_images)
            sr_context = (lowres, text, mask)
            sr_uncond = unconditional_context(sr_context)
            sr_traj = decode_with_sampler(self.superres, sr_context, sr_uncond, key_sr, sr_sampler)
            result.superres_trajectory = sr_traj
            result.images = np.asarray(_decode_images(self.highres_tokenizer, sr_traj.tokens_BxN))
        return result

    __call__ = generate
