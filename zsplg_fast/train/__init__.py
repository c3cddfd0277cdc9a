"""UniMatch, zero-shot fusion, supervised training and evaluation."""
