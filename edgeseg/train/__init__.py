"""Training: the loop, evaluation and the self-describing checkpoint."""
