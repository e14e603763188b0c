"""Executing runs: one run (claim, train, evaluate, store), a grid's runs here, in worker
processes or on Slurm in dependency order, ``bench eval`` targets, and the status and plan of a
grid."""
