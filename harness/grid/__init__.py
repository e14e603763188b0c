"""Grid files (``leaderboards/*.toml``) → runs: reading and checking a grid, its teachers'
sources, and the runs it expands to (students, the teachers and transfer surrogates they need).
Pure data: no torch here."""
