"""Small helpers shared by the tasks."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import TypeVar

from gevent.lock import BoundedSemaphore

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from pyinfra.api.operation import OperationMeta

PROJECT_DIR = Path(__file__).resolve().parent.parent
FILES_DIR = PROJECT_DIR / "files"

_templates = Environment(
    loader=FileSystemLoader(PROJECT_DIR / "templates"),
    undefined=StrictUndefined,
    keep_trailing_newline=True,
    trim_blocks=True,
    lstrip_blocks=True,
)


def render(template: str, **context) -> str:
    """Render a template from templates/ locally: the same text for every host,
    and errors surface before any host is touched."""
    return _templates.get_template(template).render(**context)


def project_file(name: str) -> str:
    """Path of a file in files/, independent of pyinfra's working directory."""
    return str(FILES_DIR / name)


def any_changed(*metas: OperationMeta) -> Callable[[], bool]:
    """An `_if=` condition: true when any of these operations changed its host."""
    return lambda: any(meta.did_change() for meta in metas)


T = TypeVar("T")


def once(build: Callable[..., T]) -> Callable[..., T]:
    """Run `build` once per pyinfra run and per arguments, however many host greenlets ask.

    pyinfra runs deploy.py once per host, each in a greenlet that switches at
    every remote command: a plain memo would be filled by every greenlet. The
    lock makes the others wait for the first; an exception is kept and raised
    to every caller, so each host reports the same error. Arguments are told
    apart by identity: they are the objects of this run (the cluster, its parts),
    made once and alive for the whole run.
    """
    lock = BoundedSemaphore()
    results: dict[tuple[int, ...], tuple[bool, object]] = {}

    @wraps(build)
    def get(*args) -> T:
        key = tuple(map(id, args))
        with lock:
            if key not in results:
                try:
                    results[key] = (True, build(*args))
                except Exception as error:  # noqa: BLE001 - re-raised to every caller
                    results[key] = (False, error)
        ok, value = results[key]
        if not ok:
            raise value
        return value

    return get
