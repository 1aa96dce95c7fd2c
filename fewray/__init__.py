"""fewray: few-shot learning on Ray and MLflow.

``fewray.algorithms`` holds the models (plain ``nn.Module``s, no Ray or MLflow);
``fewray.platform`` holds the runtime (config, data catalog, episodes, Ray Train
meta-training, Ray meta-test fan-out, MLflow tracking).
"""

__version__ = "0.1.0"
