"""runner: declarative experiment runner for probabilistic models (Hydra + NumPyro + MLflow)."""
from pathlib import Path

#: the Hydra config tree; configs mirror the code (model/ -> models/, guide/ -> guides/, ...)
CONF_DIR = str(Path(__file__).resolve().parent / "conf")
