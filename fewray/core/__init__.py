"""The shared core: registries and user-facing errors. Plain Python only (no torch, Ray or MLflow), so every
part of fewray (algorithms, data, evaluation, platform) may import it."""
