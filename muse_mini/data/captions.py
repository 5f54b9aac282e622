"""Captions of the Shapes world: vocabulary, canonical captions, paraphrases, prompt lists.

Muse's headline claims are about language understanding (§3.1, Fig. 6), so each scene
has one canonical caption, fixed by ``docs/shapes.md`` ("Scenes and canonical captions").
Pixels live in :mod:`muse_mini.data.shapes`.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import re

import numpy as np

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (240, 200, 30),
    "purple": (150, 60, 200),
    "orange": (245, 130, 30),
}
SHAPES = ("circle", "square", "triangle", "diamond")
SIZES: dict[str, tuple[int, int]] = {"small": (16, 20), "large": (26, 32)}  # inclusive
REGIONS = ("top left", "top right", "bottom left", "bottom right", "center")
RELATIONS = ("left of", "right of", "above", "below")
NUMBER_WORDS: dict[str, int] = {"two": 2, "three": 3, "four": 4}
_NUMBER_NAMES = {v: k for k, v in NUMBER_WORDS.items()}
KINDS = ("single", "placed", "count", "relation")
#: The Shapes splits: ``holdout`` scenes hold a hold-out colour-shape pair, ``train`` scenes never do.
SPLITS = ("train", "holdout")

HOLDOUT_PAIRS: tuple[tuple[str, str], ...] = (
    ("blue", "triangle"),
    ("red", "square"),
    ("yellow", "circle"),
    ("green", "diamond"),
)
ALL_PAIRS = tuple(itertools.product(COLOURS, SHAPES))
TRAIN_PAIRS = tuple(p for p in ALL_PAIRS if p not in HOLDOUT_PAIRS)


def check_int(name: str, value, minimum: int = 0) -> int:
    """``value`` as an int when it is an integer >= ``minimum`` (bools refused), or ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_split(split) -> int:
    """The index of ``split`` in :data:`SPLITS` (it seeds the random streams), or ValueError."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return SPLITS.index(split)


def check_kinds(kinds) -> tuple[str, ...]:
    """``kinds`` as a tuple (one name or a sequence; repeats allowed), or ValueError."""
    kinds = (kinds,) if isinstance(kinds, str) else tuple(kinds)
    if not kinds or any(k not in KINDS for k in kinds):
        raise ValueError(f"kinds must be a non-empty subset of {KINDS}, got {kinds!r}")
    return kinds


@dataclasses.dataclass(frozen=True)
class Requirements:
    """What a canonical caption asks for; fields a kind does not use stay None (``count`` 1)."""

    kind: str
    colour: str
    shape: str
    size: str | None = None
    region: str | None = None
    count: int = 1
    relation: str | None = None
    other_colour: str | None = None
    other_shape: str | None = None

    @property
    def pairs(self) -> tuple[tuple[str, str], ...]:
        """The distinct colour–shape pairs the caption names."""
        if self.kind == "relation":
            return ((self.colour, self.shape), (self.other_colour, self.other_shape))
        return ((self.colour, self.shape),)

    @property
    def is_holdout(self) -> bool:
        """True when the caption names a hold-out pair (spec: "compositional hold-out")."""
        return any(p in HOLDOUT_PAIRS for p in self.pairs)


# --- Captions ---
def _with_article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def canonical_caption(req: Requirements) -> str:
    """The one canonical caption for ``req`` (spec table; ``an`` before a vowel)."""
    noun = f"{req.colour} {req.shape}"
    if req.kind == "single":
        return _with_article(f"{req.size} {noun}")
    if req.kind == "placed":
        return f"{_with_article(noun)} in the {req.region}"
    if req.kind == "count":
        return f"{_NUMBER_NAMES[req.count]} {noun}s"
    if req.kind == "relation":
        other = _with_article(f"{req.other_colour} {req.other_shape}")
        return f"{_with_article(noun)} {req.relation} {other}"
    raise ValueError(f"kind must be one of {KINDS}, got {req.kind!r}")


_C = "|".join(COLOURS)
_S = "|".join(SHAPES)
_CAPTION_PATTERNS = {
    "single": re.compile(rf"an? (small|large) ({_C}) ({_S})"),
    "placed": re.compile(rf"an? ({_C}) ({_S}) in the ({'|'.join(REGIONS)})"),
    "count": re.compile(rf"({'|'.join(NUMBER_WORDS)}) ({_C}) ({_S})s"),
    "relation": re.compile(rf"an? ({_C}) ({_S}) ({'|'.join(RELATIONS)}) an? ({_C}) ({_S})"),
}


def parse_caption(caption: str) -> Requirements:
    """The :class:`Requirements` of a canonical caption; ValueError for anything else (paraphrases too)."""
    if not isinstance(caption, str):
        raise ValueError(f"caption must be a str, got {type(caption).__name__}")
    for kind, pattern in _CAPTION_PATTERNS.items():
        m = pattern.fullmatch(caption)
        if m is None:
            continue
        g = m.groups()
        if kind == "single":
            req = Requirements(kind, colour=g[1], shape=g[2], size=g[0])
        elif kind == "placed":
            req = Requirements(kind, colour=g[0], shape=g[1], region=g[2])
        elif kind == "count":
            req = Requirements(kind, colour=g[1], shape=g[2], count=NUMBER_WORDS[g[0]])
        else:
            req = Requirements(kind, colour=g[0], shape=g[1], relation=g[2],
                               other_colour=g[3], other_shape=g[4])
            if req.pairs[0] == req.pairs[1]:
                raise ValueError(f"caption {caption!r}: the two objects of a relation "
                                 "must differ in colour or shape")
        expected = canonical_caption(req)
        if expected != caption:  # only the article can differ here
            raise ValueError(f"caption {caption!r} is not canonical; expected {expected!r}")
        return req
    raise ValueError(
        f"caption {caption!r} is not a canonical Shapes caption; expected one of: "
        "'a {size} {colour} {shape}', 'a {colour} {shape} in the {region}', "
        "'{two|three|four} {colour} {shape}s', 'a {colour} {shape} {relation} a {colour} {shape}'"
    )


def pick(rng: np.random.Generator, options):
    """One element of the sequence ``options``, drawn uniformly with ``rng``."""
    return options[int(rng.integers(len(options)))]


_REGION_SYNONYMS = {"top left": "upper left", "top right": "upper right",
                    "bottom left": "lower left", "bottom right": "lower right",
                    "center": "middle"}
_RELATION_SYNONYMS = {"left of": "to the left of", "right of": "to the right of",
                      "above": "over", "below": "under"}
_INVERSE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
_SIZE_SYNONYMS = {"small": ("little", "tiny"), "large": ("big", "huge")}


def paraphrase(req: Requirements, rng: np.random.Generator) -> str:
    """A non-canonical caption with the same meaning; :func:`parse_caption` rejects every one."""
    noun = f"{req.colour} {req.shape}"
    choose = functools.partial(pick, rng)
    if req.kind == "single":
        options = (
            _with_article(f"{choose(_SIZE_SYNONYMS[req.size])} {noun}"),
            f"one {req.size} {noun}",
            _with_article(f"{req.size} {req.shape} in {req.colour}"),
            f"{_with_article(noun)}, {req.size}",
        )
    elif req.kind == "placed":
        options = (
            f"{_with_article(noun)} at the {req.region}",
            f"in the {req.region}, {_with_article(noun)}",
            f"{_with_article(noun)} in the {_REGION_SYNONYMS[req.region]}",
        )
    elif req.kind == "count":
        word = _NUMBER_NAMES[req.count]
        options = (
            f"{req.count} {noun}s",
            f"{word} {req.shape}s, all {req.colour}",
            f"a group of {word} {noun}s",
        )
    elif req.kind == "relation":
        a = _with_article(noun)
        b = _with_article(f"{req.other_colour} {req.other_shape}")
        options = (
            f"{a} {_RELATION_SYNONYMS[req.relation]} {b}",
            f"{b} {_RELATION_SYNONYMS[_INVERSE[req.relation]]} {a}",
            f"{_RELATION_SYNONYMS[req.relation]} {b} there is {a}",
        )
    else:
        raise ValueError(f"kind must be one of {KINDS}, got {req.kind!r}")
    return choose(options)


# --- Evaluation prompts ---
def all_canonical_captions(kind: str, split: str) -> list[str]:
    """Every distinct canonical caption of ``kind`` for ``split`` (``holdout``: naming a hold-out pair), in a fixed order."""
    check_split(split)
    check_kinds((kind,))
    pairs = TRAIN_PAIRS if split == "train" else HOLDOUT_PAIRS
    if kind == "single":
        reqs = [Requirements(kind, c, s, size=z) for z in SIZES for c, s in pairs]
    elif kind == "placed":
        reqs = [Requirements(kind, c, s, region=r) for c, s in pairs for r in REGIONS]
    elif kind == "count":
        reqs = [Requirements(kind, c, s, count=k) for k in NUMBER_WORDS.values() for c, s in pairs]
    else:
        pool = TRAIN_PAIRS if split == "train" else ALL_PAIRS
        reqs = [Requirements(kind, *a, relation=r, other_colour=b[0], other_shape=b[1])
                for a in pool for b in pool if a != b
                if split == "train" or a in HOLDOUT_PAIRS or b in HOLDOUT_PAIRS
                for r in RELATIONS]
    return [canonical_caption(r) for r in reqs]


def canonical_prompts(split: str, n: int | None = None, seed: int = 0) -> list[str]:
    """A deterministic list of ``n`` canonical evaluation prompts for ``split``, balanced over kinds.

    Kinds are interleaved so every prefix is balanced; within a kind, a seeded permutation,
    cycled when ``n`` needs more. Default ``n``: 4 × the rarest kind's distinct prompts.
    """
    split_id = check_split(split)
    seed = check_int("seed", seed)
    pools = []
    for k, kind in enumerate(KINDS):
        captions = all_canonical_captions(kind, split)
        order = np.random.default_rng([seed, split_id, k, 2]).permutation(len(captions))
        pools.append([captions[i] for i in order])
    n = len(KINDS) * min(len(p) for p in pools) if n is None else check_int("n", n)
    return [pools[i % len(KINDS)][(i // len(KINDS)) % len(pools[i % len(KINDS)])]
            for i in range(n)]
