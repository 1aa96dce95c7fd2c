"""Evaluators (:class:`fewray.core.protocols.Evaluator`): per-shard ``process`` inside Ray tasks, ``merge`` and
``compute`` on the driver. Plain numpy/torch: no Ray or MLflow."""
