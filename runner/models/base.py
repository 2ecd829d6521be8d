"""What every model family provides to the runner.

A model is a small object built by Hydra from `conf/model/<name>.yaml`. The runner calls it as a
NumPyro model with the data (or nothing), asks it for per-restart initial values, and asks it
for a picture once the fit is done. Nothing here knows about MLflow or Hydra.
"""
from __future__ import annotations

from abc import ABC, abstractmethod

from runner.errors import ConfigError


class Model(ABC):
    name: str = "model"
    #: True if the model takes data (`data=` group); False for fixed-density models.
    needs_data: bool = True
    #: True if the model has discrete sites marked for parallel enumeration (needs TraceEnum_ELBO).
    enumerated: bool = False
    #: name -> dotted path of a hand-written guide builder (see guides/); first one is the default.
    manual_guides: dict[str, str] = {}

    @abstractmethod
    def __call__(self, data=None):
        """The NumPyro model."""

    def bind(self, data, observed=(), fitting: bool = True):
        """The data as the fit will pass it to the model (checked); a model may keep constants.
        `observed`: the sites the fit observed (for new data that leaves them out: predict).
        `fitting`: the data is to be fitted (check_fit_data too), not only predicted for.
        A built-in model takes one unnamed array: named data (json/csv/npz) must hold just one."""
        if isinstance(data, dict):
            import numpy as np

            arrays = {k: v for k, v in data.items() if np.ndim(v) > 0}
            if len(arrays) != 1:
                raise ConfigError(f"model '{self.name}' takes one unnamed array, the data has {sorted(data)}: "
                                  "use data=file, or a file with one column/array")
            data = next(iter(arrays.values()))
        elif data is not None and not hasattr(data, "shape"):
            raise ConfigError(f"the data loader gave {type(data).__name__}, not an array: check data._target_")
        self.check_data(data)
        if fitting:
            self.check_fit_data(data)
        return data

    def check_fit_data(self, data) -> None:
        """Raise ConfigError with one line if `data` is too little to fit (predictions for a
        few new points are fine: more mixture components than points, say)."""

    def check_data(self, data) -> None:
        """Raise ConfigError with one line if `data` cannot be used by this model."""
        if self.needs_data and data is None:
            raise ConfigError(f"model '{self.name}' needs data: choose one with data=...")
        if not self.needs_data and data is not None:
            raise ConfigError(f"model '{self.name}' takes no data: use data=none")

    def init_values(self, key, data) -> dict | None:
        """Initial values for the guide's latent sites, drawn per restart from `key` (or None)."""
        return None

    def figure(self, fig, samples: dict, data) -> None:
        """Draw a picture a person would want of the fit, from guide samples of the latent sites.
        By default: the marginal posteriors of the sites and a pair plot of the first few."""
        from runner.models.drawing import marginals

        marginals(fig, samples)

    def source_file(self) -> str | None:
        """The file that defines the model (logged as an artifact for provenance)."""
        import inspect

        try:
            return inspect.getsourcefile(type(self))
        except TypeError:
            return None
