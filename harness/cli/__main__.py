"""``python -m harness.cli``: the ``bench`` command, for a checkout without the console script.

Guarded, as importing every module of the package (tests/test_faults.py) must run nothing."""

from harness.cli import main

if __name__ == "__main__":
    main()
