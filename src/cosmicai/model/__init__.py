"""AstroMAE: the architecture, checkpoints, safe import of pickles, and demo training."""
