"""Every `pip install` a message in src/ shows names a package and extra that exist.

The distribution is ``deepnet-course`` (``deepnet`` on the index is someone else's project);
hints for deepnet's extras come from :func:`deepnet.install.install_hint` alone, so they name
a command that works in a checkout (``pip install -e ".[extra]"``) and from the index.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from deepnet.install import DISTRIBUTION, EXTRAS, install_hint

tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python >= 3.11")

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "deepnet"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
NAME = PYPROJECT["project"]["name"]
PROJECT_EXTRAS = set(PYPROJECT["project"]["optional-dependencies"])
# Third-party packages a message may tell the user to install directly.
THIRD_PARTY = {"torch", "mpi4py", "mpich", "nvidia-nccl-cu12", "nvidia-nccl-cu13", "cupy"}
# One argument after `pip install`: an option, a quoted word or a bare requirement.
TOKEN = re.compile(r"""[ ]+(-[\w-]+|"[^"\s]*"|'[^'\s]*'|[\w.\-\[\],]+)""")
STOP = {"or", "and", "from", "in", "for", "to", "with", "then", "if"}


def _string_pieces(tree: ast.AST, *, f_strings: bool = True) -> list[str]:
    """Every string in a module; an f-string with ``{}`` for each replacement field."""
    joined = [n for n in ast.walk(tree) if isinstance(n, ast.JoinedStr)]
    inside = {id(v) for n in joined for v in n.values}
    pieces = [
        n.value
        for n in ast.walk(tree)
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in inside
    ]
    if f_strings:
        for n in joined:
            parts = (v.value if isinstance(v, ast.Constant) else "{}" for v in n.values)
            pieces.append("".join(parts))
    return pieces


def _commands(text: str) -> list[list[str]]:
    """The arguments after each `pip install` in ``text``, quotes removed."""
    out = []
    for match in re.finditer(r"pip install", text):
        args, pos = [], match.end()
        while (token := TOKEN.match(text, pos)) is not None and token.group(1) not in STOP:
            word = token.group(1).rstrip(",")
            args.append(word[1:-1] if word[:1] in "'\"" else word)
            pos = token.end()
        out.append(args)
    return out


def _check_requirement(arg: str) -> str | None:
    """None when ``arg`` is an installable target here, else what is wrong with it."""
    if arg.startswith("-"):
        return None
    match = re.fullmatch(r"([A-Za-z0-9_.-]+)(?:\[([a-z0-9_,-]+)\])?", arg)
    if match is None:
        return f"{arg!r} is not a requirement pip understands"
    name, extras = match.group(1), match.group(2)
    if name == ".":
        pass  # the checkout itself
    elif name == NAME:
        pass
    elif name == "deepnet":
        return f"{arg!r} names the unrelated 'deepnet' project on the index, not {NAME!r}"
    elif name not in THIRD_PARTY:
        return f"{arg!r}: unknown package (add it to THIRD_PARTY if it is meant)"
    elif extras:
        return f"{arg!r}: extras of a third-party package are not checked"
    unknown = set((extras or "").split(",")) - PROJECT_EXTRAS - {""}
    if unknown and name in (".", NAME):
        return f"{arg!r}: no extra {sorted(unknown)} in pyproject.toml"
    return None


def test_the_distribution_name_is_the_one_in_pyproject():
    assert NAME == DISTRIBUTION and NAME != "deepnet"
    assert set(EXTRAS) == PROJECT_EXTRAS


@pytest.mark.parametrize("extra", EXTRAS)
def test_each_hint_installs_from_a_checkout_and_from_the_index(extra: str):
    commands = _commands(install_hint(extra))
    assert commands == [["-e", f".[{extra}]"], [f"{NAME}[{extra}]"]]


def test_an_unknown_extra_is_refused():
    with pytest.raises(ValueError, match="unknown extra"):
        install_hint("cuda11")


def test_every_pip_install_in_src_names_a_real_package_and_extra():
    problems, seen = [], 0
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for text in _string_pieces(tree, f_strings=path.name != "install.py"):
            for args in _commands(text):
                seen += 1
                where = f"{path.relative_to(ROOT)}: {text.strip()[:90]!r}"
                if not [a for a in args if not a.startswith("-")]:
                    problems.append(f"{where}: installs nothing")
                for arg in args:
                    if (problem := _check_requirement(arg)) is not None:
                        problems.append(f"{where}: {problem}")
                if path.name != "install.py" and any(
                    a.startswith((".[", f"{NAME}[")) for a in args
                ):
                    problems.append(f"{where}: spell deepnet's extras with install_hint()")
    assert seen >= 2, "the scan found no pip commands at all: is the pattern broken?"
    assert not problems, "\n".join(problems)


def test_the_checker_catches_the_old_hints():
    old = "install CuPy with pip install 'deepnet[cuda12]' (CUDA 12.x)"
    assert [_check_requirement(a) for args in _commands(old) for a in args] == [
        "'deepnet[cuda12]' names the unrelated 'deepnet' project on the index, not 'deepnet-course'"
    ]
    assert _check_requirement(".[cuda11]") is not None
    assert _check_requirement(f"{NAME}[mpi]") is None
