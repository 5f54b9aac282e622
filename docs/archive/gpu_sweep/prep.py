"""Pack what the GPU sweep needs into gpuwork/ (git-ignored; carried to the device).

    .venv/bin/python docs/archive/gpu_sweep/prep.py

Needs finished ``runs/demo`` and ``runs/full`` tokenizers. Writes the frozen
text embeddings (float16) of every training, hold-out and evaluation caption,
and copies the three tokenizer runs the sweep decodes with.
"""
import shutil
from pathlib import Path
import numpy as np
from muse_mini.config import get_preset
from muse_mini.data.shapes import generate, canonical_prompts
from muse_mini.models.text.encoder import EmbeddingCache, load_text_encoder

cfg = get_preset("toy")
out = Path("gpuwork/data"); out.mkdir(parents=True, exist_ok=True)
cache = EmbeddingCache(load_text_encoder(cfg.text.encoder, max_length=cfg.text.max_length),
                       directory=Path("runs/full/text-cache"))
_, caps, _ = generate(50000, seed=0, split="train")
_, hcaps, _ = generate(500, seed=0, split="holdout")
evalp = canonical_prompts("train", n=48) + canonical_prompts("holdout", n=16)
unique = sorted(set(caps) | set(hcaps) | set(evalp))
text, mask = cache.encode(unique)
np.savez(out / "text.npz", captions=np.array(unique), text=np.asarray(text, np.float16), mask=np.asarray(mask))
print(len(unique), np.asarray(text).shape)
for src, dst in (("runs/demo/tokenizer-base", "tok-demo"), ("runs/full/tokenizer-base", "tok-full-base"),
                 ("runs/full/tokenizer-highres", "tok-full-hr")):
    d = Path("gpuwork") / dst; d.mkdir(exist_ok=True)
    for f in ("config.json", "DONE.json", "final.eqx"):
        shutil.copy(Path(src) / f, d / f)
