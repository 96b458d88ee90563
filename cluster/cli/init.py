"""``abode init DIR``: a starter project to copy from.

It holds an app with one object and an edge function, its unit tests on
``abode.testing``, a pyproject that depends on abode (with pytest and mypy, strict, as
dev extras) and a README whose two commands work as written: ``abode dev NAME.py`` and
``python -m pytest``. The app module is named after the folder (``abode init
hello-world`` writes ``hello_world.py``), so installing the project adds no generic
module name to site-packages.
"""

from __future__ import annotations

import importlib.metadata
import keyword
import re
import sys
from pathlib import Path
from string import Template

TEMPLATES = Path(__file__).with_name("init_template")

__all__ = ["InitError", "init_project", "module_name"]


class InitError(Exception):
    """The project cannot be written there; the message says why."""


def module_name(folder: str) -> str:
    """A module name from a folder name that imports as the user's own."""
    name = re.sub(r"\W+", "_", Path(folder).resolve().name.lower()).strip("_") or "app"
    if name[0].isdigit():
        name = "app_" + name
    if keyword.iskeyword(name) or name in sys.stdlib_module_names or name == "abode" \
            or name.startswith("test"):
        name += "_app"  # never shadow the standard library, abode or look like a test
    return name


def init_project(folder: str) -> list[Path]:
    """Write the starter project into ``folder`` (created, or empty); returns the files."""
    root = Path(folder)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise InitError(f"{folder} exists and is not an empty folder: abode init writes a "
                        "new project, it changes none")
    module = module_name(folder)
    values = {"name": Path(folder).resolve().name, "module": module,
              "abode_version": _abode_version()}
    files = {
        f"{module}.py": "app.py.tmpl",
        f"test_{module}.py": "test_app.py.tmpl",
        "pyproject.toml": "pyproject.toml.tmpl",
        "README.md": "README.md.tmpl",
        ".gitignore": "gitignore.tmpl",
    }
    root.mkdir(parents=True, exist_ok=True)
    written = []
    for target, template in files.items():
        text = Template((TEMPLATES / template).read_text()).substitute(values)
        (root / target).write_text(text)
        written.append(root / target)
    return written


def _abode_version() -> str:
    try:
        return importlib.metadata.version("abode")
    except importlib.metadata.PackageNotFoundError:
        return "0.1.0"
