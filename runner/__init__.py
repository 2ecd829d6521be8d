"""runner: declarative experiment runner for probabilistic models (Hydra + NumPyro + MLflow)."""
from pathlib import Path

#: the Hydra config tree; configs mirror the code (model/ -> models/, guide/ -> guides/, ...)
CONF_DIR = str(Path(__file__).resolve().parent / "conf")


def model_extras(**extras):
    """Attach optional extras to a plain model function: `init_values(key, **data)` (per-restart
    initial values), `figure(fig, samples, data)`, EM's `em_init`/`em_log_joint`/`em_m_step`/
    `em_params`. Example: `@runner.model_extras(init_values=my_init)`."""
    from runner.models.function import model_extras as attach

    return attach(**extras)
