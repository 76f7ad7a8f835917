"""How to install deepnet's optional parts: the one place that spells the pip commands.

The package imports as ``deepnet`` and installs the ``deepnet`` command, but its
distribution on the package index is ``deepnet-course`` (``deepnet`` there is an unrelated
2016 project). Every message that tells a user to install an extra calls :func:`install_hint`,
so each names a command that works from a checkout of the repository and, once published,
from the index. ``tests/test_install_hints.py`` holds these names to pyproject.toml.
"""

from __future__ import annotations

DISTRIBUTION = "deepnet-course"  # [project] name in pyproject.toml
EXTRAS = ("cuda12", "cuda13", "mpi", "torch", "jax", "test")  # [project.optional-dependencies] keys


def install_hint(extra: str) -> str:
    """The two pip commands that install ``extra``: from a checkout, and from the index.

    >>> install_hint("mpi")
    'pip install -e ".[mpi]" (in a checkout) or pip install "deepnet-course[mpi]"'
    """
    if extra not in EXTRAS:
        raise ValueError(f"unknown extra {extra!r}: one of {', '.join(EXTRAS)}")
    return f'pip install -e ".[{extra}]" (in a checkout) or pip install "{DISTRIBUTION}[{extra}]"'
