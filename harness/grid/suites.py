"""Named evaluation attacks and suites: the DGAD paper's protocol as data.

A preset is ``None`` (clean) or an attack config ``{"attack": <registered name>, **params}``;
the grid's threat model fills ``eps`` (and PGD's ``step_size``) for the attacks that take them.

The presets are the DGAD authors' calls (``eval_utils.py`` / ``main_eval.py`` of
kunsaram01/DGAD, advertorch 0.2.3 and AutoAttack; ``tests/test_suites.py`` pins each):
- ``fgsm``: ``GradientSignAttack(eps=8/255, clip 0..1)``;
- ``pgd10``: ``LinfPGDAttack(eps=8/255, nb_iter=10, eps_iter=eps/4, rand_init=True, clip 0..1)``
  (uniform start in the eps-ball, clamped to the image box);
- ``cw2``: ``CarliniWagnerL2Attack(confidence=0.01, max_iterations=1000, learning_rate=0.01,
  binary_search_steps=1, initial_const=0.1, clip 0..1)``, ``initial_const`` = main_eval's
  ``--coeff`` default;
- ``autoattack``: ``AutoAttack(norm="Linf", eps=8/255, version="standard")``;
- transfer ``jsma-paper``: ``JacobianSaliencyMapAttack(gamma=0.05, theta=c, clip 0..1)`` called
  with the true labels as targets (``test_transfer_robust``). ``c`` is not in their code; 0.1 is
  main_eval's ``--coeff`` default, which its help gives for JSMA. Not an attack on the student:
  it pushes the surrogate's misclassified images towards their own class (see
  :func:`is_attack`). ``jsma``, a real targeted attack towards a wrong class, is the default.
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
    "cw2": {
        "attack": "cw2",
        "c": 0.1,
        "confidence": 0.01,
        "steps": 1000,
        "lr": 0.01,
        "binary_search_steps": 1,
    },
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
    "jsma-paper": {
        "attack": "jsma",
        "theta": 0.1,
        "gamma": 0.05,
        "target": "label",
        "rules": "advertorch",
    },
}
#: The transfer attacks a grid runs with ``[eval] transfer = true``.
TRANSFER_DEFAULT = ["fgsm", "pgd10", "jsma"]

#: eps values of the "accuracy falls as eps grows" check (in 1/255 units).
EPS_SWEEP = [2, 4, 8, 16, 32, 64]


def preset_text(config: dict[str, Any] | None) -> str:
    """A preset in a few words: ``pgd steps=10`` (eps and step size come from the grid)."""
    if config is None:
        return "no attack"
    params = " ".join(f"{k}={v}" for k, v in config.items() if k != "attack")
    return f"{config['attack']} {params}".strip()


def is_attack(config: dict[str, Any] | None) -> bool:
    """Whether ``config`` attacks the model: not clean, and not a JSMA whose target is the true
    class (the DGAD authors' transfer call, which can only raise accuracy). Only attacks enter
    the worst case and the leaderboard's ranking."""
    if config is None:
        return False
    return not (config.get("attack") == "jsma" and config.get("target") == "label")


def ranks(column: str) -> bool:
    """Whether a leaderboard may rank by ``column`` (a result name such as
    ``transfer/resnet34/jsma-paper``): not by the JSMA presets that target the true class."""
    name = column.rsplit("/", 1)[-1]
    config = TRANSFER_ATTACKS.get(name) if column.startswith("transfer/") else PRESETS.get(name)
    return config is None or is_attack(config)


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
