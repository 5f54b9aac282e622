"""Which aMUSEd folder notebook 09 shows: the downloaded weights when present (not in smoke mode), else the tiny
random test fixture, with the download command and the licence printed."""

import json

import pytest

from muse_mini import notebook
from muse_mini.amused import is_amused_folder


@pytest.fixture
def downloaded(tmp_path):
    folder = tmp_path / "amused-256"
    folder.mkdir()
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "AmusedPipeline"}))
    return folder


def test_the_downloaded_weights_are_used_when_present(monkeypatch, downloaded, capsys):
    monkeypatch.setattr(notebook, "AMUSED", downloaded)
    monkeypatch.setattr(notebook, "SMOKE", False)
    assert notebook.amused_folder() == downloaded
    assert "released weights" in capsys.readouterr().out


@pytest.mark.parametrize("case", ["absent", "smoke"])
def test_otherwise_the_fixture_is_used_and_the_download_command_shown(monkeypatch, tmp_path, downloaded, capsys,
                                                                     case):
    monkeypatch.setattr(notebook, "AMUSED", tmp_path / "nothing" if case == "absent" else downloaded)
    monkeypatch.setattr(notebook, "SMOKE", case == "smoke")
    folder = notebook.amused_folder()
    assert folder.parts[-3:] == ("fixtures", "amused", "tiny-256") and is_amused_folder(folder)
    out = capsys.readouterr().out
    assert "RANDOM" in out and "huggingface-cli download amused/amused-256 --local-dir" in out
    assert "openrail++" in out
