"""Loading a user's app: its object classes (namespaces) and optional edge function."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from abode.cluster.user_code import user_frame

EdgeFunction = Callable[[Any, Any], Awaitable[Any]]


class AppError(Exception):
    """The app could not be loaded; the message says why and what to check."""


@dataclass(frozen=True)
class App:
    module: ModuleType
    objects: dict[str, type] = field(default_factory=dict)
    edge: EdgeFunction | None = None

    @property
    def namespaces(self) -> list[str]:
        return sorted(self.objects)


def load_app(spec: str) -> App:
    """Load ``spec``: a module path (``examples.counter``) or a ``.py`` file path."""
    module = _import(spec)
    objects: dict[str, type] = {}
    for value in vars(module).values():
        # Duck-typed so that cluster need not import node: DurableObject subclasses
        # carry the namespace their class defines.
        ns = getattr(value, "_abode_namespace", None) if inspect.isclass(value) else None
        if isinstance(ns, str) and ns:
            other = objects.get(ns)
            if other is not None and other is not value:
                raise AppError(f"namespace {ns!r} is defined twice ({other!r}, {value!r})")
            objects[ns] = value
    edge = getattr(module, "edge", None)
    if edge is not None and not inspect.iscoroutinefunction(edge):
        raise AppError(f"{spec}: edge must be `async def edge(request, env)`")
    if not objects and edge is None:
        raise AppError(f"{spec} defines no DurableObject subclass and no edge function")
    return App(module, objects, edge)


def _import(spec: str) -> ModuleType:
    if spec.endswith(".py") or os.sep in spec:
        path = os.path.abspath(spec)
        if not os.path.isfile(path):
            raise AppError(f"app file {spec} does not exist")
        name = module_name_of_file(path)
        if name in sys.modules:
            return sys.modules[name]
        loader_spec = importlib.util.spec_from_file_location(name, path)
        assert loader_spec is not None and loader_spec.loader is not None
        module = importlib.util.module_from_spec(loader_spec)
        sys.modules[name] = module
        # The app's folder is importable, as for `python app.py`: its helpers
        # (even ones named router.py or node.py) are the user's own modules.
        folder = os.path.dirname(path)
        if folder not in sys.path:
            sys.path.insert(0, folder)
        try:
            loader_spec.loader.exec_module(module)
        except Exception as exc:
            del sys.modules[name]
            raise AppError(load_error(spec, exc)) from exc
        return module
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(spec)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (spec == exc.name or spec.startswith(exc.name + ".")):
            # The app itself is not there, not one of its imports.
            raise AppError(
                f"cannot import app {spec!r}: no module {exc.name!r} in {os.getcwd()} or on "
                "the Python path. Pass a module path importable from the current directory "
                "(examples.counter) or a file path (path/to/app.py)."
            ) from None
        raise AppError(load_error(spec, exc)) from exc
    except Exception as exc:
        raise AppError(load_error(spec, exc)) from exc


def module_name_of_file(path: str) -> str:
    """The name an app file is imported under (its own, apart from any module)."""
    return "abode_app_" + os.path.splitext(os.path.basename(path))[0]


def load_error(spec: str, exc: BaseException) -> str:
    """One line: the user's file and line, and the real cause."""
    where = user_frame(exc)
    at = f"{where[0]}, line {where[1]}: " if where else ""
    cause = f"{type(exc).__name__}: {exc.msg if isinstance(exc, SyntaxError) else exc}"
    hint = ""
    if isinstance(exc, ModuleNotFoundError):
        hint = f" (is it installed for {sys.executable}?)"
    return f"cannot load app {spec}: {at}{cause}{hint}"
