"""Attacks: the shared PGD loop and the registered attack objects (``attack(model, x, y)``)."""

from harness.attacks import autoattack, cw, jsma, linf
from harness.attacks.base import Attack
from harness.attacks.pgd import pgd_maximize, project, random_start

__all__ = ["Attack", "autoattack", "cw", "jsma", "linf", "pgd_maximize", "project", "random_start"]
