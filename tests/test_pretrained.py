"""Pretrained pipelines: the shipped Shapes weights, ``muse-mini export`` folders, Hub ids; all offline."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from muse_mini.runs.pretrained import INDEX_FILE, SHIPPED_DIR, WEIGHTS_FILE


@pytest.fixture(scope="module")
def exported(smoke_runs, tmp_path_factory):
    from muse_mini.runs.export import export_pipeline

    out = tmp_path_factory.mktemp("export") / "smoke-pretrained"
    export_pipeline(smoke_runs / "smoke", out, provenance={"recipe": "smoke", "machine": "test"})
    return out


def test_the_shipped_pipeline_loads_in_a_fresh_process_without_training_code():
    code = ("import sys; from muse_mini.pipeline import Pipeline; p = Pipeline.from_pretrained('shapes'); "
            "assert p.has_superres; "
            "print(sorted(m for m in sys.modules if m.startswith(('muse_mini.training', 'optax'))))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": "/tmp"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_the_shipped_pipeline_matches_its_model_card():
    """A few card prompts regenerated at a fixed seed give the card's caption accuracy, within sampling noise."""
    from muse_mini.data.captions import canonical_prompts
    from muse_mini.data.evaluator import caption_accuracy
    from muse_mini.pipeline import Pipeline

    index = json.loads((SHIPPED_DIR / "shapes" / INDEX_FILE).read_text())
    card = index["evaluation"]["demo"]["accuracy"]["base/train"]
    assert f"{card:.1%}" in (SHIPPED_DIR / "shapes" / "README.md").read_text()
    pipe = Pipeline.from_pretrained("shapes")
    prompts = canonical_prompts("train", n=48)[::2]  # the card's first 48 train prompts, every other one
    gen = pipe.generate(prompts, num_per_prompt=2, seed=0, stage="base")
    measured = caption_accuracy(gen.images, gen.prompts)["accuracy"]
    spread = math.sqrt(card * (1 - card) / len(gen.images))
    assert abs(measured - card) <= 4 * spread, (measured, card)


def test_an_exported_folder_gives_the_runs_images(exported, smoke_runs):
    from muse_mini.pipeline import Pipeline

    index = json.loads((exported / INDEX_FILE).read_text())
    assert set(index["stages"]) == {"tokenizer", "base", "highres_tokenizer", "superres", "decoder"}
    card = (exported / "README.md").read_text()
    assert "| recipe | smoke |" in card and "SuperResTransformer" in card
    for stage in index["stages"]:
        assert json.loads((exported / stage / "config.json").read_text())["config"]
    prompts = ["a red circle", "two blue squares"]
    a = Pipeline.from_pretrained(exported).generate(prompts, seed=3)
    b = Pipeline.from_run(smoke_runs / "smoke").generate(prompts, seed=3)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.base_images, b.base_images)


def test_export_refuses_a_non_empty_folder(smoke_runs, tmp_path):
    from muse_mini.runs.export import export_pipeline

    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="--out: .* is not empty"):
        export_pipeline(smoke_runs / "smoke", tmp_path)
    assert (tmp_path / "keep.txt").read_text() == "mine"


def _copy(folder, tmp_path):
    import shutil

    return shutil.copytree(folder, tmp_path / "copy")


def test_a_replaced_weight_file_is_refused(exported, tmp_path):
    from muse_mini.pipeline import Pipeline

    copy = _copy(exported, tmp_path)
    tensors = load_file(copy / "base" / WEIGHTS_FILE)
    name = sorted(tensors)[0]
    tensors[name] = tensors[name] + 1
    save_file(tensors, copy / "base" / WEIGHTS_FILE)
    with pytest.raises(ValueError, match="sha256 differs"):
        Pipeline.from_pretrained(copy)


@pytest.mark.parametrize("change, message", [("drop", "missing \\['"), ("add", "unknown \\['extra.weight'\\]")])
def test_weights_that_do_not_fit_the_model_are_named_in_one_line(exported, tmp_path, change, message):
    from muse_mini.runs.pretrained import file_sha256, load_stage

    copy = _copy(exported, tmp_path)
    path = copy / "tokenizer" / WEIGHTS_FILE
    tensors = load_file(path)
    if change == "drop":
        tensors.pop(sorted(tensors)[0])
    else:
        tensors["extra.weight"] = np.zeros(3, np.float32)
    save_file(tensors, path)
    index = json.loads((copy / INDEX_FILE).read_text())
    index["stages"]["tokenizer"]["sha256"] = file_sha256(path)
    (copy / INDEX_FILE).write_text(json.dumps(index))
    with pytest.raises(ValueError, match=message) as err:
        load_stage(copy, "tokenizer")
    assert "\n" not in str(err.value)


def test_the_shipped_name_wins_over_a_folder_of_that_name(tmp_path, monkeypatch):
    from muse_mini.runs.pretrained import names_pretrained

    monkeypatch.chdir(tmp_path)
    (tmp_path / "shapes").mkdir()  # e.g. what `muse-mini shapes --out shapes` wrote
    assert names_pretrained("shapes") and not names_pretrained("./shapes") and not names_pretrained(tmp_path)


def test_names_that_are_not_pipelines_are_refused(tmp_path, monkeypatch):
    from muse_mini.runs.pretrained import resolve_pretrained

    with pytest.raises(FileNotFoundError, match="has no model_index.json"):
        resolve_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="not a shipped pipeline"):
        resolve_pretrained("no-such-thing")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="the Hub is offline"):
        resolve_pretrained("someone/muse-shapes")


def test_a_hub_id_downloads_the_folder_files(exported, monkeypatch):
    """The Hub path asks huggingface_hub for the folder's files only; the download here is the exported folder."""
    import huggingface_hub

    from muse_mini.pipeline import Pipeline

    asked = {}

    def snapshot_download(repo_id, allow_patterns):
        asked.update(repo_id=repo_id, allow_patterns=allow_patterns)
        return str(exported)

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    pipe = Pipeline.from_pretrained("someone/muse-shapes")
    assert asked["repo_id"] == "someone/muse-shapes" and "*/model.safetensors" in asked["allow_patterns"]
    assert pipe.has_superres


def test_the_commands_take_the_shipped_name_and_an_export(exported, tmp_path, capsys):
    from muse_mini.cli import main

    out = tmp_path / "samples"
    assert main(["sample", "--run", "shapes", "--prompt", "a red circle", "--out", str(out), "--stage", "base"]) in (0, None)
    assert (out / "0000_0.png").is_file()
    assert main(["sample", "--run", str(exported), "--prompt", "a red circle", "--out", str(tmp_path / "s2")]) in (0, None)
    assert main(["sample", "--run", "shapes", "--ema", "--prompt", "x", "--out", str(tmp_path / "s3")]) == 2
    assert "ema: " in capsys.readouterr().err


def test_export_from_the_command_line(smoke_runs, tmp_path, capsys):
    from muse_mini.cli import main

    out = tmp_path / "folder"
    assert main(["export", "--run", str(smoke_runs / "smoke"), "--out", str(out), "--machine", "laptop"]) in (0, None)
    assert "| machine | laptop |" in (out / "README.md").read_text()
    assert main(["export", "--run", str(tmp_path / "nothing"), "--out", str(tmp_path / "x")]) == 2
    assert "--run: no such directory" in capsys.readouterr().err


def test_the_shipped_weights_stay_within_their_budget():
    """The issue's budget: at most 15 MB added to the repository."""
    files = [p for p in (SHIPPED_DIR / "shapes").rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) <= 15_000_000
    index = json.loads((SHIPPED_DIR / "shapes" / INDEX_FILE).read_text())
    assert set(index["stages"]) == {"tokenizer", "base", "highres_tokenizer", "superres", "decoder"}
