"""docs/real_data.md, run end to end at smoke size on a webdataset written in img2dataset's layout.

The same commands as the CC3M recipe, with ``--preset toy`` and the smoke
settings instead of ``--preset cc3m``: train both tokenizers on the shards,
tokenise the shards once, train base and super-res on the token shards, sample.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from muse_mini.cli import main
from muse_mini.notebook import SMOKE_OVERRIDES

sys.path.insert(0, str(Path(__file__).parent))
from _real_data import write_photo_webdataset  # noqa: E402

SMOKE = [*SMOKE_OVERRIDES, "decoder.enabled=false"]


def cli(*args, progress: bool = False) -> None:
    assert main([*map(str, args), *([] if progress else ["--no-progress"])]) == 0


def test_the_real_data_recipe_runs_end_to_end(tmp_path, capsys):
    wds = tmp_path / "photos"
    write_photo_webdataset(wds, 48, shard_size=12, corrupt=(5,))
    run = tmp_path / "runs" / "photos"
    source = f"data.source={wds}"
    with pytest.warns(UserWarning, match="key 000000005 is not a readable image"):
        cli("train-tokenizer", "--stage", "base", "--run", run / "tokenizer-base", source, *SMOKE)
    cli("train-tokenizer", "--stage", "highres", "--run", run / "tokenizer-highres", source, *SMOKE)
    assert json.loads((run / "tokenizer-base" / "config.json").read_text())["metadata"]["data"]["source"] == str(wds)

    tokens = tmp_path / "photos-tokens"
    cli("tokenize", "--source", f"{wds}/{{00000..00003}}.tar", "--run", run, "--out", tokens, *SMOKE)
    manifest = json.loads((tokens / "manifest.json").read_text())
    assert [s["count"] for s in manifest["shards"]] == [11, 12, 12, 12]  # the corrupt JPEG is skipped
    assert {"tokens", "hr_tokens", "captions"} <= set(manifest["fields"])

    cli("train-base", "--run", run / "base", f"data.tokens={tokens}", *SMOKE)
    cli("train-superres", "--run", run / "superres", f"data.tokens={tokens}", *SMOKE)
    out = tmp_path / "samples"
    cli("sample", "--run", run, "--prompt", "a ginger cat looking left", "--out", out, progress=True)
    index = [json.loads(line) for line in (out / "index.jsonl").read_text().splitlines()]
    assert len(index) == 1
    image = np.asarray(Image.open(out / index[0]["file"]))
    assert image.shape == (64, 64, 3)


def test_a_paper_preset_without_data_says_which_source_to_set(tmp_path, capsys):
    code = main(["train-tokenizer", "--preset", "cc3m", "--stage", "base", "--run", str(tmp_path / "r"),
                 "tokenizer.perceptual=none", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert "data.source" in err and "docs/real_data.md" in err
    assert len(err.strip().splitlines()) == 1
