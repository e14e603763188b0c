"""The result store: one directory per run (the truth), a SQLite index the leaderboards read,
and one claim per run so that no two processes write one run."""
