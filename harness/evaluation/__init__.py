"""Evaluating a model: accuracy under attacks per sample (resumable per batch), the reliability
checks, transfer attacks from surrogates, and a run's whole evaluation into its store."""
