"""Finding the application: loading it from an import string as `flask --app` does, and the
import string that reaches it again from another process or another directory; the
console scripts of this environment, as printed commands must name them."""

from __future__ import annotations

import ast
import importlib
import importlib.machinery
import inspect
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any


class ConfigError(Exception):
    """The configuration cannot work; the message says which setting and why (here: the
    application named cannot be loaded)."""


def is_flask(obj: Any) -> bool:
    return all(hasattr(obj, a) for a in ("config", "instance_path", "extensions", "root_path"))


_REF = re.compile(r":(?![\\/])")


def _split(ref: str) -> tuple[str, str]:
    parts = _REF.split(ref.strip(), maxsplit=1)
    return parts[0], parts[1] if len(parts) > 1 else ""


def looks_like_path(module: str) -> bool:
    return module.endswith(".py") or os.sep in module or "/" in module


def prepare_import(path: str) -> str:
    """The module name of a file or package path, with its folder put on sys.path
    (what `flask --app path/to/app.py` does)."""
    full = os.path.realpath(path)
    stem, ext = os.path.splitext(full)
    if ext == ".py":
        full = stem
    if os.path.basename(full) == "__init__":
        full = os.path.dirname(full)
    names: list[str] = []
    while True:
        full, name = os.path.split(full)
        names.append(name)
        if not os.path.exists(os.path.join(full, "__init__.py")):
            break
    if full not in sys.path:
        sys.path.insert(0, full)
    return ".".join(reversed(names))


def load_app(import_string: str) -> Any:
    """Import `module:attribute` as `flask --app` does: a factory is called (with the
    literal arguments given, as in `module:create_app('prod')`); a WSGI callable or an
    application object is taken as it is. The module may be a file path."""
    module_part, attr = _split(import_string)
    if looks_like_path(module_part):
        module_name = prepare_import(module_part)
    else:
        module_name = module_part
        if os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"cannot import the application {import_string!r}: {exc}") from exc
    name, args, kwargs = _call(attr, import_string)
    candidates = [name] if name else ["app", "application", "create_app", "make_app"]
    for candidate in candidates:
        obj = getattr(module, candidate, None)
        if obj is None:
            continue
        if args is not None or _is_factory(obj):
            obj = obj(*(args or ()), **(kwargs or {}))
        return obj
    raise ConfigError(f"{import_string!r} names no application (tried {', '.join(candidates)})")


def module_of(import_string: str) -> Any:
    """The module an import string names, once `load_app` imported it (else None)."""
    module_part, _ = _split(import_string)
    name = prepare_import(module_part) if looks_like_path(module_part) else module_part
    return sys.modules.get(name)


def _call(attr: str, whole: str) -> tuple[str, tuple[Any, ...] | None, dict[str, Any] | None]:
    """`create_app` or `create_app('prod', debug=False)`: the name, and literal arguments."""
    if not attr:
        return "", None, None
    try:
        expr = ast.parse(attr.strip(), mode="eval").body
    except SyntaxError as exc:
        raise ConfigError(f"{whole!r}: cannot read {attr!r} as an attribute or a call") from exc
    if isinstance(expr, ast.Name):
        return expr.id, None, None
    if isinstance(expr, ast.Call) and isinstance(expr.func, ast.Name):
        try:
            args = tuple(ast.literal_eval(a) for a in expr.args)
            kwargs = {k.arg: ast.literal_eval(k.value) for k in expr.keywords if k.arg}
        except ValueError as exc:
            raise ConfigError(f"{whole!r}: only literal arguments can be passed") from exc
        return expr.func.id, args, kwargs
    raise ConfigError(f"{whole!r}: cannot read {attr!r} as an attribute or a call")


def _is_factory(obj: Any) -> bool:
    """A function callable with no arguments makes the application; a WSGI callable
    (environ, start_response) or an application object does not."""
    if not (inspect.isfunction(obj) or inspect.ismethod(obj)):
        return False
    try:
        inspect.signature(obj).bind()
    except TypeError:
        return False
    return True


def portable_ref(ref: str) -> str:
    """`module:attr` as any directory can import it: a file path when the module is
    importable only through the current directory (a project that is not installed)."""
    module_part, attr = _split(ref)
    suffix = f":{attr}" if attr else ""
    if looks_like_path(module_part):
        return f"{os.path.abspath(module_part)}{suffix}"
    module = sys.modules.get(module_part)
    file = getattr(module, "__file__", None)
    if module is None or not file or _importable_elsewhere(module_part.split(".")[0]):
        return ref
    return f"{Path(file).resolve()}{suffix}"


def _importable_elsewhere(top: str) -> bool:
    """Whether `top` imports without the current directory on sys.path (installed,
    editable, or on a fixed path)."""
    cwd = os.path.realpath(os.getcwd())
    path = [p for p in sys.path if p and os.path.realpath(p) != cwd]
    for finder in sys.meta_path:
        try:
            if finder is importlib.machinery.PathFinder:
                spec = finder.find_spec(top, path)
            else:  # an editable install's finder, zipimport…
                spec = finder.find_spec(top, None)
        except Exception:
            continue
        if spec is not None:
            return True
    return False


def guess_ref(app: Any) -> str | None:
    """The import string of an application object the server made (gunicorn, waitress…):
    the module attribute that is this object, else the module's factory."""
    if app is None:
        return None
    name = getattr(app, "import_name", None) or getattr(app, "__module__", None) or ""
    parts = name.split(".")
    modules = [".".join(parts[:i]) for i in range(len(parts), 0, -1)]
    for module_name in modules:
        module = sys.modules.get(module_name)
        if module is None:
            continue
        label = _module_label(module_name, module)
        for attr, value in vars(module).items():
            if value is app:
                return f"{label}:{attr}"
        for factory in ("create_app", "make_app"):
            if _is_factory(getattr(module, factory, None)):
                return f"{label}:{factory}"
    return None


def _module_label(name: str, module: Any) -> str:
    if name == "__main__":  # `python notes.py`: import it by its file instead
        return str(Path(module.__file__).resolve()) if getattr(module, "__file__", None) else name
    return portable_ref(name)


def console_script() -> list[str]:
    """`upgrader` of this environment by its full path (the interpreter's `-m` where the
    script was not installed)."""
    mine = Path(sys.executable).parent / "upgrader"
    return [str(mine)] if mine.is_file() else [sys.executable, "-m", "upgrader"]


def executable(name: str) -> list[str]:
    """The words that run console script `name` of this environment, from any directory:
    the bare name when PATH finds this very script, else its full path."""
    mine = Path(sys.executable).parent / name
    found = shutil.which(name)
    if mine.is_file():
        same = found is not None and os.path.realpath(found) == os.path.realpath(mine)
        return [name] if same else [str(mine)]
    module = "flask" if name == "flask" else "upgrader"
    return [sys.executable, "-m", module]
