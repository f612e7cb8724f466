"""The library: model deployments, steering vectors, probes, datasets and versioned recipes."""
