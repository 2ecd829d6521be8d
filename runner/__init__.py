"""runner: declarative experiment runner for probabilistic models (Hydra + NumPyro + MLflow).

The Python API (runner/api.py): `runner.compose`, `runner.build`, `runner.fit`, `runner.run`."""
import time
from pathlib import Path

#: when this process imported runner: a source file changed since is not the code running
#: (runner/inference/program_cache.py keeps no program then)
IMPORTED_AT = time.time()

#: the Hydra config tree; configs mirror the code (model/ -> models/, guide/ -> guides/, ...)
CONF_DIR = str(Path(__file__).resolve().parent / "conf")


def model_extras(**extras):
    """Attach optional extras to a plain model function: `init_values(key, **data)` (per-restart
    initial values), `figure(fig, samples, data)`, EM's `em_init`/`em_log_joint`/`em_m_step`/
    `em_params`. Example: `@runner.model_extras(init_values=my_init)`."""
    from runner.models.function import model_extras as attach

    return attach(**extras)


API = ("compose", "build", "fit", "run", "fit_config")


def __getattr__(name: str):
    if name in API:  # imported on first use: `import runner` stays light (the CLI imports it first)
        from runner import api

        return getattr(api, name)
    if name == "FitOutput":  # what runner.fit returns, for every method
        from runner.inference.base import FitOutput

        return FitOutput
    raise AttributeError(f"module 'runner' has no attribute {name!r}")
