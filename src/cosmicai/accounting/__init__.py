"""Usage and cost of a finished run, per backend (local, Slurm's sacct, Lambda's REPORT lines)."""
