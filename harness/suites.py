"""Named evaluation attacks and suites: the DGAD paper's protocol as data.

A preset is ``None`` (clean) or an attack config ``{"attack": <registered name>, **params}``;
the grid's threat model fills ``eps`` (and PGD's ``step_size``) for the attacks that take them.
"""

from __future__ import annotations

from typing import Any

PRESETS: dict[str, dict[str, Any] | None] = {
    "clean": None,
    "fgsm": {"attack": "fgsm"},
    "pgd10": {"attack": "pgd", "steps": 10},
    "pgd20": {"attack": "pgd", "steps": 20},
    "pgd50": {"attack": "pgd", "steps": 50},
    "cw_inf": {"attack": "pgd", "loss": "cw", "steps": 30},
    "cw2": {"attack": "cw2"},
    "autoattack": {"attack": "autoattack", "version": "standard"},
}

#: White-box evaluation of the paper (Tables 2-6 and 8).
WHITEBOX = ["clean", "fgsm", "pgd10", "cw2", "autoattack"]

#: Transfer evaluation (Table 7): examples made on naturally trained surrogates.
SURROGATES = ["resnet34", "vgg16_bn"]
TRANSFER_ATTACKS: dict[str, dict[str, Any]] = {
    "fgsm": {"attack": "fgsm"},
    "pgd10": {"attack": "pgd", "steps": 10},
    "jsma": {"attack": "jsma"},
}

#: eps values of the "accuracy falls as eps grows" check (in 1/255 units).
EPS_SWEEP = [2, 4, 8, 16, 32, 64]


def resolve(name: str, params: dict[str, Any] | None, threat: dict[str, Any]) -> dict | None:
    """Fill the threat model into an attack config where the attack takes those parameters."""
    import inspect

    from harness.registry import ATTACKS

    if params is None:
        return None
    params = dict(params)
    accepted = inspect.signature(ATTACKS.get(params["attack"])).parameters
    for key in ("eps", "step_size"):
        if key in accepted and key in threat:
            params.setdefault(key, threat[key])
    return params
