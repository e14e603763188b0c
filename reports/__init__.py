"""The papers' tables: for each paper, which runs fill each cell and the numbers it published.

Edited here; installed as the package ``harness.reports`` (see pyproject.toml) and read through
:mod:`importlib.resources`, so that a wheel runs ``bench report`` as a checkout does.
"""
