"""The data plane: dataset format and reading, partitions, predictions, merge, synthetic and imported data."""
