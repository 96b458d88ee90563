"""Where the user's code is in a traceback.

A handler that raises, or an app that does not import, shows its author their own
file and line first: abode's frames (the runtime that called the handler, the loader
that imported the app) and the import machinery say nothing they can act on.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import sysconfig
import traceback
from types import TracebackType


@functools.cache
def _abode_dirs() -> tuple[str, ...]:
    # The folders of the package and its three subpackages, real paths: in an editable
    # install they are the repository's cluster/, node/ and router/, not its root.
    dirs = set()
    for name in ("abode", "abode.cluster", "abode.node", "abode.router"):
        spec = importlib.util.find_spec(name)
        for location in (spec.submodule_search_locations or []) if spec else []:
            dirs.add(os.path.realpath(location) + os.sep)
    return tuple(dirs)


# Python's own library and installed packages: code the user did not write.
_LIBRARY_DIRS = tuple(
    {os.path.realpath(p) + os.sep for key in ("stdlib", "platstdlib", "purelib", "platlib")
     if (p := sysconfig.get_paths().get(key))}
)


def is_abode_file(filename: str) -> bool:
    path = os.path.realpath(filename)
    return path.startswith(_abode_dirs())


def is_user_file(filename: str) -> bool:
    """Not frozen importlib, not abode, not the standard library or a site-package."""
    if filename.startswith("<"):
        return False
    path = os.path.realpath(filename)
    return not path.startswith(_abode_dirs()) and not path.startswith(_LIBRARY_DIRS)


def user_frame(exc: BaseException) -> tuple[str, int] | None:
    """(file, line) of the deepest frame of the user's code in ``exc``'s traceback.

    A syntax error names the file it could not parse. An app installed as a package
    (site-packages) has no "user" frame by that rule: then the deepest frame that is
    neither abode's nor the import machinery's.
    """
    if isinstance(exc, SyntaxError) and exc.filename:
        return exc.filename, exc.lineno or 0
    frames = traceback.extract_tb(exc.__traceback__)
    for rule in (is_user_file, lambda f: not f.startswith("<") and not is_abode_file(f)):
        found = [f for f in frames if rule(f.filename)]
        if found:
            return found[-1].filename, found[-1].lineno or 0
    return None


def format_user_traceback(exc: BaseException) -> str:
    """The traceback of ``exc`` from the first frame outside abode on (all of it if
    there is none), ending with ``Type: message``."""
    tb: TracebackType | None = exc.__traceback__
    while tb is not None and is_abode_file(tb.tb_frame.f_code.co_filename):
        tb = tb.tb_next
    return "".join(
        traceback.format_exception(type(exc), exc, tb or exc.__traceback__)
    ).rstrip("\n")
