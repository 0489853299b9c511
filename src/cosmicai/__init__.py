"""cosmicai: scalable AstroMAE photometric-redshift inference (local, Slurm, AWS Lambda)."""

__version__ = "0.1.0"
