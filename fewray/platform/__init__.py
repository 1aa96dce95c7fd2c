"""The fewray runtime: config, registry, data, training, meta-test and tracking."""
