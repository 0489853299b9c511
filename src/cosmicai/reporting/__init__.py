"""What a run reports: photo-z metrics, plots, run summaries and the report's tables."""
