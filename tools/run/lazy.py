"""Package names that import their module on first use, so importing a package stays light."""
import importlib
from typing import Callable, Dict, Tuple


def lazy_exports(package: str, where: Dict[str, str]) -> Tuple[Callable, Callable]:
    """(__getattr__, __dir__) for a package's namespace: name -> the submodule (relative) defining it."""
    def __getattr__(name):
        if name in where:
            return getattr(importlib.import_module(f".{where[name]}", package), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__():
        return sorted(set(where) | set(importlib.import_module(package).__dict__))
    return __getattr__, __dir__
