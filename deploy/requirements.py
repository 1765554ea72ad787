"""The deploy stack is optional (`requirements-deploy.txt`): say in one line what to install when it is missing."""

import importlib.util

from cli import InputError

INSTALL = "pip install -r requirements-deploy.txt"


class MissingDependency(InputError, ImportError):
    """A package of the deploy stack is not installed."""


def require(*modules: str, purpose: str) -> None:
    """Raise MissingDependency naming the missing modules and the install command."""
    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    if missing:
        raise MissingDependency(f"{purpose} needs {', '.join(missing)}, not installed here: {INSTALL}")
