"""One way for a test to say that something it needs is missing.

Under CI (``CI=true``) every component and import the tests need is installed
(``.ci/system-deps.sh``, the ``test`` extra), so a missing one fails the test
rather than skipping it: a green CI run means every test ran. Elsewhere the test
skips with a message naming what is missing and how to install it.

``optional_tool`` is the one exception, for binaries that no package registry
this project installs from provides (Terraform): those tests skip everywhere,
under a name that says so.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import shutil
from collections.abc import Iterator
from types import ModuleType
from typing import NoReturn

import pytest

OPTIONAL_TOOL = "optional tool"


def under_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def fail_or_skip(message: str) -> NoReturn:
    """Fail under CI, else skip, with ``message`` (what is missing, how to install it)."""
    if under_ci():
        pytest.fail(f"CI must run this test: {message}", pytrace=False)
    pytest.skip(message, allow_module_level=True)


def missing(what: str, install: str) -> NoReturn:
    """``fail_or_skip``: ``what`` is missing, ``install`` says how to get it."""
    fail_or_skip(f"{what} is missing: {install}")


def require_import(module: str, install: str) -> ModuleType:
    """``importlib.import_module(module)``, or ``missing`` if it cannot be imported."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        missing(f"Python module {module} ({err})", install)


def require_binary(name: str, install: str) -> str:
    """The path of ``name`` on PATH, or ``missing``."""
    path = shutil.which(name)
    if path is None:
        missing(f"{name} (not on PATH)", install)
    return path


@contextlib.contextmanager
def component() -> Iterator[None]:
    """Turns ``ComponentMissing`` (a server binary absent) raised inside into
    ``fail_or_skip``; its message already says how to install it."""
    from rtp.local_servers import ComponentMissing

    try:
        yield
    except ComponentMissing as err:
        fail_or_skip(str(err))


def optional_tool(name: str, why: str) -> str:
    """The path of ``name``; without it the test skips, also under CI: no package
    registry the project installs from ships it (see the module docstring)."""
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{OPTIONAL_TOOL} {name} not installed: {why}")
    return path
