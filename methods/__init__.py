"""Built-in methods: every module in this package registers its method with
``@register_method``. The package imports all of its modules (the method registry imports it
lazily), so a new file dropped here is a new method, with nothing else to edit."""

import importlib
import pkgutil

from methods.base import Method, register_method

for _info in pkgutil.iter_modules(__path__):
    if _info.name not in ("base", "common"):
        importlib.import_module(f"{__name__}.{_info.name}")

__all__ = ["Method", "register_method"]
