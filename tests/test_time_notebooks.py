"""scripts/time_notebooks.py: the syllabus's notebook times, measured by running each notebook as a learner would."""

import json

import nbformat

from tests.script_module import load_script


def _notebook(path, *sources):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
    nbformat.write(nb, path)
    return path


def test_times_each_notebook_in_smoke_mode_with_its_own_scratch(tmp_path, capsys):
    script = load_script("time_notebooks")
    ok = _notebook(tmp_path / "a.ipynb",
                   "import os; from muse_mini.notebook import SMOKE, SCRATCH\n"
                   "assert SMOKE and str(SCRATCH) == os.environ['MUSE_MINI_SCRATCH']\n"
                   "assert os.path.basename(os.getcwd()) != 'notebooks'\n"
                   "import matplotlib.pyplot as plt; plt.plot([0, 1]); plt.show()")
    failing = _notebook(tmp_path / "b.ipynb", "raise ValueError('cell broke')")
    out = tmp_path / "times.json"
    assert script.main(["--smoke", str(ok), str(failing), "--out", str(out), "--executed", str(tmp_path / "x")]) == 1
    assert "cell broke" in str(nbformat.read(tmp_path / "x" / "b.ipynb", as_version=4).cells[0].outputs)
    outputs = nbformat.read(tmp_path / "x" / "a.ipynb", as_version=4).cells[0].outputs
    assert any("image/png" in o.get("data", {}) for o in outputs), "the figure is drawn inline, as for a learner"
    report = json.loads(out.read_text())
    assert report["mode"] == "smoke" and "cores" in report["machine"]
    assert report["notebooks"]["a.ipynb"]["error"] is None and report["notebooks"]["a.ipynb"]["seconds"] > 0
    assert "cell broke" in report["notebooks"]["b.ipynb"]["error"]
    table = capsys.readouterr().out
    assert "| a.ipynb |" in table and "| b.ipynb |" in table
    assert not list(tmp_path.glob("*/scratch")), "scratch lives in the temporary copy"


def test_a_notebook_over_budget_fails_the_run(tmp_path, monkeypatch):
    monkeypatch.delenv("MPLBACKEND", raising=False)  # as a learner's shell has it: restored unset afterwards
    script = load_script("time_notebooks")
    slow = _notebook(tmp_path / "slow.ipynb", "import time; time.sleep(1.5)")
    assert script.main(["--smoke", "--budget", "0.01", str(slow)]) == 1
    assert script.main(["--smoke", "--budget", "1", str(slow)]) == 0
    import os

    assert "MPLBACKEND" not in os.environ
