"""``python -m harness.cli``: the ``bench`` command, for a checkout without the console script."""

from harness.cli import main

main()
