"""Machine and version facts printed with every benchmark table."""

from __future__ import annotations

import datetime
import os
import platform


def machine_info() -> dict[str, str]:
    """Date, CPU model, cores, Python, torch, Ray and MLflow versions."""
    import mlflow
    import ray
    import torch

    cpu = platform.processor() or "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "date": datetime.date.today().isoformat(),
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "ray": ray.__version__,
        "mlflow": mlflow.__version__,
    }
