"""scripts/readme-check reads the README as intended: what it runs, skips and compares.

Running the README's commands is the script's job (``.ci/run`` runs it); this checks, in
well under a second, that each README command is either run or skipped for a stated reason,
and that the tour's commands are among those run.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def check():
    path = str(ROOT / "scripts" / "readme-check")
    loader = importlib.machinery.SourceFileLoader("readme_check", path)
    spec = importlib.util.spec_from_loader("readme_check", loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def test_every_readme_command_is_run_or_skipped_with_a_reason(check):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    items = check.items(readme, install=False, course_data=None)
    run = [label for label, command, _, _ in items if command is not None]
    skipped = {label: note for label, command, note, _ in items if command is None}
    assert all(skipped.values())
    tour = ["deepnet train", "deepnet train --help", "deepnet info"]
    tour += ["deepnet evaluate runs/model.npz", "deepnet mislabeled runs/model.npz"]
    assert set(tour) <= set(run)
    assert any(label.startswith("deepnet train --dtype float32") for label in run)  # quick run
    python = [item for item in items if item[0] == "the Python example"]
    assert len(python) == 1 and python[0][3] and "test accuracy" in python[0][3]


def test_install_steps_are_left_out_unless_asked_and_placeholders_filled(check):
    line = "python3 -m venv .venv && . .venv/bin/activate && pip install -e . && deepnet train"
    assert check.plan(line, install=False, course_data=None) == (
        "deepnet train", "install steps left out (--install runs them)",
    )  # fmt: skip
    assert check.plan(line, install=True, course_data=None) == (line, "")
    course = "DEEPNET_DATA=/path/to/datasets deepnet train --out runs/course.npz"
    assert check.plan(course, install=False, course_data=None)[0] is None
    filled = check.plan(course, install=False, course_data="/data")[0]
    assert filled.startswith("DEEPNET_DATA=/data ")
    for skipped in ("mpiexec -n 2 deepnet train --distributed", "docker build .",
                    "python -m pytest benchmarks --benchmark-only"):  # fmt: skip
        command, note = check.plan(skipped, install=False, course_data=None)
        assert command is None and note


def test_commands_drop_trailing_comments_but_keep_the_command(check):
    text = "deepnet train   # -> runs/model.npz\n\n# a comment line\ndeepnet info\n"
    assert check.commands(text) == ["deepnet train", "deepnet info"]
    found = check.blocks("x\n```bash\na\n```\n```text\nb\n```\n")
    assert found == [("bash", "a\n"), ("text", "b\n")]
