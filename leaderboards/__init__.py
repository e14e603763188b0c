"""The shipped grid files and the HTML leaderboard's template.

Edited here; installed as the package ``harness.leaderboards`` (see pyproject.toml) and read
through :mod:`importlib.resources`, so that a wheel runs them as a checkout does.
"""
