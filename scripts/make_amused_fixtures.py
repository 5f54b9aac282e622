"""Write the aMUSEd reference fixtures that tests/test_amused_*.py check muse_mini's JAX ports against.

Dev-only: needs torch and diffusers, which muse_mini itself never imports. diffusers
0.33.1 is the last release with the aMUSEd pipeline; it wants a transformers 4.x and a
huggingface_hub below 1.0. Run it from a separate virtual environment:

    python3 -m venv /tmp/amvenv
    /tmp/amvenv/bin/pip install torch==2.13.0 diffusers==0.33.1 transformers==4.51.3 \
        "huggingface_hub<1.0" safetensors numpy
    /tmp/amvenv/bin/python scripts/make_amused_fixtures.py

It writes tests/fixtures/amused/tiny-256/ and tiny-512/, each laid out like the Hub's
amused/amused-256 folder (model_index.json; transformer/, vqvae/, text_encoder/,
tokenizer/, scheduler/) through AmusedPipeline.save_pretrained, and fp32 reference
outputs beside them in tiny-256.npz and tiny-512.npz. The two differ as the real
checkpoints do: tiny-512's UVit2DModel has downsample=upsample=True, and its images and
token maps are twice as wide. Every weight is redrawn at a fixed seed at a useful scale,
including each norm's weight and bias and GlobalResponseNorm's gamma and beta (fresh
ones are 1/0, which would hide a norm wired to the wrong place).

The VQModel keys mirror diffusers' scripts/convert_amused.py (make_vqvae): silu,
DownEncoderBlock2D/UpDecoderBlock2D, layers_per_block 2, mid_block_add_attention=False,
lookup_from_codebook=True; only the widths are tiny (8, 8, 16: f4 instead of f16;
4 groups; 8 latent channels; 30 codes). GroupNorm eps 1e-6 is fixed inside diffusers'
Encoder/Decoder. The UVit2DModel keys follow the aMUSEd test's dummy model, with the
sizes below; the mask token is vocab_size - 1 as in aMUSEd.

tiny-256's weight files are float32; tiny-512's are float16 (see make_layout).

npz keys (B = 2; every float is float32):
  weights_dtype               "float32" or "float16": the dtype of the folder's weight files
  clip_input_ids (B,77)       the tokenizer on PROMPTS, padding="max_length" to 77
  clip_penultimate (B,77,D)   text_encoder(ids, output_hidden_states=True).hidden_states[-2]
  clip_text_embeds (B,P)      ... .text_embeds (EOS-pooled, projected)
  uvit_input_ids (B,h,w)      random codes, about 40% mask_token_id
  uvit_encoder_hidden_states, uvit_pooled_text_emb  = clip_penultimate, clip_text_embeds
  uvit_micro_conds (B,5)      (width, height, crop_x, crop_y, aesthetic) as the pipeline orders them
  uvit_logits (B,codebook,h,w)  transformer(ids, micro_conds=, pooled_text_emb=, encoder_hidden_states=)
  vq_images (B,3,H,W)         smooth random images in [0, 1] (the pipelines do not normalise)
  vq_latents (B,C,h,w)        vqvae.encode(images).latents (encoder + quant_conv)
  vq_indices (B,h,w)          vqvae.quantize(latents)[2][2], as AmusedImg2ImgPipeline does
  vq_decoded (B,3,H,W)        vqvae.decode(indices, force_not_quantize=True, shape=(B,h,w,C)).sample,
                              RAW: the pipelines then call .clip(0, 1)
  step_*                      one AmusedScheduler.step; see sampler_step()
"""

import contextlib
import json
import math
from pathlib import Path

import numpy as np
import torch
import transformers
from diffusers import AmusedPipeline, AmusedScheduler, UVit2DModel, VQModel
from diffusers.schedulers import scheduling_amused
from safetensors.numpy import load_file
from transformers.models.clip.tokenization_clip import bytes_to_unicode

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "fixtures" / "amused"
MAX_LENGTH = 77
PROMPTS = ["a photo of a red dog on the grass", "two green triangles above a blue circle!"]
WORDS = (
    "a an the of on in above below left right photo painting dog cat red green blue yellow "
    "purple orange circle square triangle triangles two three small large".split()
)
CLIP_DIM, CLIP_PROJ = 32, 24
CODEBOOK, VOCAB = 30, 32
MASK_ID = VOCAB - 1
NORMS = ("LayerNorm", "GroupNorm", "RMSNorm", "GlobalResponseNorm")
STEP_INDEX, STEPS, TEMPERATURE = 3, 12, (2.0, 0.0)


def clip_tokenizer(path: Path) -> transformers.CLIPTokenizer:
    """A byte-level BPE in CLIP's format: 256 bytes, 256 word-final bytes, merges spelling WORDS, two specials."""
    path.mkdir(parents=True, exist_ok=True)
    chars = list(bytes_to_unicode().values())
    vocab = chars + [c + "</w>" for c in chars]
    merges = []
    for word in WORDS:
        parts = list(word[:-1]) + [word[-1] + "</w>"]
        left = parts[0]
        for right in parts[1:]:
            if f"{left} {right}" not in merges:
                merges.append(f"{left} {right}")
                vocab.append(left + right)
            left += right
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    (path / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (path / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    tok = transformers.CLIPTokenizer(
        str(path / "vocab.json"), str(path / "merges.txt"), model_max_length=MAX_LENGTH, pad_token="<|endoftext|>"
    )
    return tok


def randomise(model: torch.nn.Module, seed: int) -> None:
    """Redraw every parameter: norms around 1/0 with a wide spread, weights at 1/sqrt(fan_in), biases small."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            is_norm = type(module).__name__ in NORMS
            for name, p in module.named_parameters(recurse=False):
                u = torch.rand(p.shape, generator=g) - 0.5
                if is_norm:
                    p.copy_((1.0 if name == "weight" else 0.0) + u)
                elif p.ndim == 1:
                    p.copy_(0.4 * u)
                else:
                    fan_in = 1 if isinstance(module, torch.nn.Embedding) else math.prod(p.shape[1:])
                    p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(fan_in))


def make_clip(vocab_size: int, eos_id: int, seed: int) -> transformers.CLIPTextModelWithProjection:
    torch.manual_seed(seed)
    cfg = transformers.CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=CLIP_DIM, intermediate_size=37, projection_dim=CLIP_PROJ,
        num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=MAX_LENGTH,
        hidden_act="quick_gelu", layer_norm_eps=1e-5, bos_token_id=eos_id - 1, eos_token_id=eos_id,
        pad_token_id=eos_id,
    )  # fmt: skip
    model = transformers.CLIPTextModelWithProjection(cfg).eval()
    randomise(model, seed)
    return model


def make_uvit(side: int, down_up: bool, seed: int) -> UVit2DModel:
    torch.manual_seed(seed)
    model = UVit2DModel(
        hidden_size=32, use_bias=False, cond_embed_dim=CLIP_PROJ, micro_cond_encode_dim=8,
        micro_cond_embed_dim=40, encoder_hidden_size=CLIP_DIM, vocab_size=VOCAB, codebook_size=CODEBOOK,
        in_channels=8, block_out_channels=16, num_res_blocks=1, downsample=down_up, upsample=down_up,
        block_num_heads=2, num_hidden_layers=2, num_attention_heads=2, intermediate_size=48,
        layer_norm_eps=1e-6, ln_elementwise_affine=True, sample_size=side,
    ).eval()  # fmt: skip
    randomise(model, seed)
    return model


def make_vq(image_side: int, seed: int) -> VQModel:
    torch.manual_seed(seed)
    model = VQModel(
        act_fn="silu", block_out_channels=[8, 8, 16], down_block_types=["DownEncoderBlock2D"] * 3,
        up_block_types=["UpDecoderBlock2D"] * 3, in_channels=3, out_channels=3, latent_channels=8,
        layers_per_block=2, norm_num_groups=4, num_vq_embeddings=CODEBOOK, sample_size=image_side,
        mid_block_add_attention=False, lookup_from_codebook=True,
    ).eval()  # fmt: skip
    randomise(model, seed)
    with torch.no_grad():  # centre the raw output on 0.5, most pixels inside [0, 1], some clipped
        model.decoder.conv_out.weight.mul_(0.4)
        model.decoder.conv_out.bias.add_(0.5)
    return model


def smooth_images(rng: np.random.Generator, batch: int, side: int) -> torch.Tensor:
    coarse = torch.from_numpy(rng.uniform(0, 1, (batch, 3, 4, 4)).astype(np.float32))
    fine = torch.nn.functional.interpolate(coarse, size=(side, side), mode="bilinear", align_corners=False)
    noise = torch.from_numpy(rng.normal(0, 0.05, fine.shape).astype(np.float32))
    return (fine + noise).clamp(0, 1)


def gumbel(rng: np.random.Generator, shape) -> np.ndarray:
    u = rng.uniform(1e-6, 1 - 1e-6, shape)
    return (-np.log(-np.log(u))).astype(np.float32)


@contextlib.contextmanager
def fixed_noise(sample_gumbel: np.ndarray, choice_gumbel: np.ndarray):
    """Replace the scheduler's two random draws by recorded Gumbel noise.

    torch.multinomial(probs, 1) becomes argmax(log probs + sample_gumbel) (the Gumbel-max
    trick draws from the same distribution), and gumbel_noise() returns choice_gumbel.
    """
    multinomial, noise = torch.multinomial, scheduling_amused.gumbel_noise

    def gumbel_max(probs, num_samples, generator=None):
        assert num_samples == 1 and probs.shape == sample_gumbel.shape
        return (torch.log(probs) + torch.from_numpy(sample_gumbel)).argmax(-1, keepdim=True)

    def recorded(t, generator=None):
        return torch.from_numpy(choice_gumbel).reshape(t.shape)

    torch.multinomial, scheduling_amused.gumbel_noise = gumbel_max, recorded
    try:
        yield
    finally:
        torch.multinomial, scheduling_amused.gumbel_noise = multinomial, noise


def sampler_step(uvit, cond, rng, side) -> dict[str, np.ndarray]:
    """One AmusedScheduler.step (cosine, temperature 2 -> 0 over 12 steps) at step index 3, fixed noise.

    The token map has all but a few tokens masked, so the cosine keep count binds; its
    logits come from the transformer with batch element 0's conditioning.
    """
    n = side * side
    sample = np.full(n, MASK_ID, np.int64)
    known = rng.choice(n, size=max(2, n // 32), replace=False)
    sample[known] = rng.integers(0, CODEBOOK, known.size)
    ids = torch.from_numpy(sample).reshape(1, side, side)
    with torch.no_grad():
        logits = uvit(ids, micro_conds=cond[2][:1], pooled_text_emb=cond[1][:1], encoder_hidden_states=cond[0][:1])
    sched = AmusedScheduler(mask_token_id=MASK_ID, masking_schedule="cosine")
    sched.set_timesteps(STEPS, temperature=TEMPERATURE)
    timestep = sched.timesteps[STEP_INDEX]
    sample_g, choice_g = gumbel(rng, (n, CODEBOOK)), gumbel(rng, (n,))
    with fixed_noise(sample_g, choice_g):
        out = sched.step(logits, timestep, ids)
    return {
        "step_logits": logits[0].reshape(CODEBOOK, n).T.numpy(),
        "step_sample": sample.astype(np.int32),
        "step_index": np.int32(STEP_INDEX),
        "step_timestep": np.int32(timestep),
        "step_steps": np.int32(STEPS),
        "step_temperature": np.float32(sched.temperatures[STEP_INDEX]),
        "step_sample_gumbel": sample_g,
        "step_choice_gumbel": choice_g,
        "step_mask_token_id": np.int32(MASK_ID),
        "step_prev_sample": out.prev_sample.reshape(n).numpy().astype(np.int32),
        "step_pred_original": out.pred_original_sample.reshape(n).numpy().astype(np.int32),
    }


def make_layout(name: str, latent_side: int, down_up: bool, micro_conds, seed: int, fp16: bool):
    """Save one pipeline folder and return its fp32 references.

    With fp16 the weights are rounded to float16 first and saved as float16 files (as the
    Hub's fp16 variant is); the references still run in float32 on the rounded weights, so
    a port that upcasts the files must match them exactly as it matches the fp32 layout.
    """
    path = OUT / name
    tok = clip_tokenizer(OUT / ".tokenizer-scratch")
    eos = tok.convert_tokens_to_ids("<|endoftext|>")
    clip = make_clip(len(tok), eos, seed)
    uvit = make_uvit(latent_side, down_up, seed + 1)
    vq = make_vq(4 * latent_side, seed + 2)
    sched = AmusedScheduler(mask_token_id=MASK_ID, masking_schedule="cosine")
    pipe = AmusedPipeline(vqvae=vq, tokenizer=tok, text_encoder=clip, transformer=uvit, scheduler=sched)
    if fp16:
        pipe.to(dtype=torch.float16)
    pipe.save_pretrained(path, safe_serialization=True)
    pipe.to(dtype=torch.float32)

    rng = np.random.default_rng(seed)
    ids = tok(PROMPTS, padding="max_length", max_length=MAX_LENGTH, truncation=True, return_tensors="pt").input_ids
    b, h = len(PROMPTS), latent_side
    tokens = torch.from_numpy(rng.integers(0, CODEBOOK, (b, h, h)))
    tokens[torch.from_numpy(rng.uniform(size=(b, h, h)) < 0.4)] = MASK_ID
    micro = torch.tensor(micro_conds, dtype=torch.float32)
    images = smooth_images(rng, b, 4 * latent_side)
    with torch.no_grad():
        text = clip(ids, output_hidden_states=True)
        penultimate, pooled = text.hidden_states[-2], text.text_embeds
        logits = uvit(tokens, micro_conds=micro, pooled_text_emb=pooled, encoder_hidden_states=penultimate)
        latents = vq.encode(images).latents
        indices = vq.quantize(latents)[2][2].reshape(b, h, h)
        decoded = vq.decode(indices, force_not_quantize=True, shape=(b, h, h, latents.shape[1])).sample
    ref = {
        "weights_dtype": np.array("float16" if fp16 else "float32"),
        "clip_input_ids": ids.numpy().astype(np.int32),
        "clip_penultimate": penultimate.numpy(),
        "clip_text_embeds": pooled.numpy(),
        "uvit_input_ids": tokens.numpy().astype(np.int32),
        "uvit_encoder_hidden_states": penultimate.numpy(),
        "uvit_pooled_text_emb": pooled.numpy(),
        "uvit_micro_conds": micro.numpy(),
        "uvit_logits": logits.numpy(),
        "vq_images": images.numpy(),
        "vq_latents": latents.numpy(),
        "vq_indices": indices.numpy().astype(np.int32),
        "vq_decoded": decoded.numpy(),
    }
    ref |= sampler_step(uvit, (penultimate, pooled, micro), rng, latent_side)
    np.savez_compressed(OUT / f"{name}.npz", **ref)
    return ref


def report(name: str, ref: dict[str, np.ndarray], codebook: np.ndarray) -> None:
    """Margins that a float32 port needs: nearest-code gaps, Gumbel-max gaps, decoded range."""
    lat = torch.from_numpy(ref["vq_latents"]).permute(0, 2, 3, 1).reshape(-1, ref["vq_latents"].shape[1])
    dist = torch.cdist(lat, torch.from_numpy(codebook)).sort(-1).values
    scores = np.log(np.exp(ref["step_logits"]) / np.exp(ref["step_logits"]).sum(-1, keepdims=True))
    top2 = np.sort(scores + ref["step_sample_gumbel"], -1)[:, -2:]
    dec, masked = ref["vq_decoded"], [(ref[k] == MASK_ID).sum() for k in ("step_sample", "step_prev_sample")]
    print(
        f"{name}: min code-distance gap {float((dist[:, 1] - dist[:, 0]).min()):.4f}; "
        f"min Gumbel-max gap {float((top2[:, 1] - top2[:, 0]).min()):.4f}; "
        f"decoded in [0,1]: {float(((dec >= 0) & (dec <= 1)).mean()):.2f}; "
        f"masked before/after step: {masked[0]}/{masked[1]}"
    )


def main() -> None:
    torch.set_num_threads(1)
    OUT.mkdir(parents=True, exist_ok=True)
    layouts = {
        "tiny-256": (8, False, [[256, 256, 0, 0, 6], [320, 256, 12, 4, 5.5]], 0, False),
        "tiny-512": (16, True, [[512, 512, 0, 0, 6], [640, 480, 32, 0, 4.5]], 10, True),
    }
    for name, (side, down_up, micro, seed, fp16) in layouts.items():
        ref = make_layout(name, side, down_up, micro, seed, fp16)
        codebook = load_file(OUT / name / "vqvae" / "diffusion_pytorch_model.safetensors")["quantize.embedding.weight"]
        report(name, ref, codebook.astype(np.float32))
    for scratch in sorted((OUT / ".tokenizer-scratch").iterdir()):
        scratch.unlink()
    (OUT / ".tokenizer-scratch").rmdir()
    sizes = {str(p.relative_to(OUT)): p.stat().st_size for p in sorted(OUT.rglob("*")) if p.is_file()}
    print(json.dumps(sizes, indent=1), f"\ntotal {sum(sizes.values())} bytes")


if __name__ == "__main__":
    main()
