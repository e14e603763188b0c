"""Built-in methods. Each file registers one method with ``@register_method``; importing this
package (which the method registry does lazily) registers them all."""

from methods import adaad, akd, ard, dgad, gacd, iad, mart, pgd_at, rslad, trades  # noqa: F401
from methods.base import Method, register_method

__all__ = ["Method", "register_method"]
