"""Small utilities every layer may use: one-line user errors, values from files and flags
(fractions, hashes, seeds), names that become paths, atomic files, torch compatibility, model
modes, progress bars, precision and determinism, verified downloads. Nothing here knows a grid,
a run or a store."""
