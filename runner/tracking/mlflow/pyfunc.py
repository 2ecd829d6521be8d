"""The fitted model as an MLflow pyfunc model, logged with each run that has data:

    mlflow.pyfunc.load_model("runs:/<run id>/model").predict(x)

returns each row's MAP cluster assignment for mixtures, and posterior predictive draws
(samples, *x.shape) of the observations for the other models; `mlflow models serve
--env-manager local -m runs:/<run id>/model` answers the same on /invocations. The model's
artifacts are the run's own files (config.yaml, latents.json, params.json, posterior.npz) and
model.json (inference method, data shape and dtype); the code is pyfunc_code.py (MLflow's
models from code: nothing pickled); predictions are made by runner.predict, the code behind
`python -m runner.predict`.

Loading any MLflow pyfunc model runs its code (here pyfunc_code.py, read from the store): load
only models from stores you trust. The model's config.yaml is, in addition, held to the rule of
runner.trust (its `_target_`s and `model.fn` resolve to runner's components, a Hydra plugin
package or a package named in $RUNNER_TRUST; otherwise load_model raises ConfigError).
"""
from __future__ import annotations

import contextlib
import json
import warnings
from pathlib import Path

import mlflow.pyfunc
import numpy as np

DRAWS = 100  # posterior predictive draws per prediction (params={"samples": N} changes it)


class RunnerModel(mlflow.pyfunc.PythonModel):
    # MLflow would wrap predict for validation by type hints; the logged signature does that
    _skip_type_hint_validation = True

    def load_context(self, context):
        from runner.fitted import load_fitted
        from runner.trust import trusted_roots

        self.meta = json.loads(Path(context.artifacts["model.json"]).read_text())
        # the stored config.yaml is data: held to runner.trust's rule (runner, Hydra plugin
        # packages, $RUNNER_TRUST) before anything in it is instantiated
        self.fitted = load_fitted(dict(context.artifacts), self.meta["method"], trusted_roots())

    def predict(self, context, model_input, params=None):
        from runner.fitted import predict_data

        x = self._inputs(model_input)
        samples = int((params or {}).get("samples", DRAWS))
        kind, out = predict_data(self.fitted, x, samples=samples, seed=int((params or {}).get("seed", 0)))
        if kind == "assignments":
            return np.asarray(next(v for k, v in out.items() if not k.endswith("_probs")), dtype=np.int64)
        return np.asarray(next(iter(out.values())))

    def _inputs(self, model_input):
        """The model's data from the input: named data (a function model) from a DataFrame's
        columns or a dict, with the fit's constants (sizes such as N) where the input has none;
        one array otherwise."""
        names = self.meta.get("names")
        if names is not None:
            if hasattr(model_input, "columns"):
                cols = {str(c): model_input[c].to_numpy() for c in model_input.columns}
            elif isinstance(model_input, dict):
                cols = {str(k): np.asarray(v) for k, v in model_input.items()}
            else:
                raise ValueError("this model takes named inputs: a pandas DataFrame (one column per "
                                 f"argument: {', '.join(names)}) or a dict of arrays")
            data = dict(self.meta.get("constants") or {})
            for k, v in cols.items():
                data[k] = v.astype(names[k]["dtype"]) if k in names else v
            return data
        x = model_input.to_numpy() if hasattr(model_input, "to_numpy") else np.asarray(model_input)
        x = x.astype(self.meta["dtype"])
        if len(self.meta["shape"]) == 0 and x.ndim == 2 and x.shape[1] == 1:  # one column of scalars
            x = x[:, 0]
        return x


def model_run(run_id: str):
    """Run `run_id` as MLflow's active run, in which `log_model` logs (its experiment is the
    logged model's); leaving it ends the run."""
    return mlflow.start_run(run_id=run_id)


def log_model(run_id: str, files: dict, method: str, data, constants: dict | None = None) -> str:
    """Log RunnerModel into run `run_id` (the active run: `model_run`) as artifact `model`; its
    logged model's id. Named data (a function model's keyword arguments) becomes named, optional
    columns; `constants` (the data's Python scalars, e.g. sizes) are kept for inputs that do not
    carry them."""
    import importlib.metadata
    import tempfile

    from mlflow.models import ModelSignature
    from mlflow.types import ParamSchema, ParamSpec, Schema, TensorSpec

    active = mlflow.active_run()
    if active is None or active.info.run_id != run_id:  # MLflow logs into the active run
        raise RuntimeError(f"log_model({run_id}) outside model_run({run_id})")

    params = ParamSchema([ParamSpec("samples", "long", DRAWS), ParamSpec("seed", "long", 0)])
    if isinstance(data, dict):
        arrays = {k: np.asarray(v) for k, v in data.items()}
        meta = {"method": method, "names": {k: {"shape": list(v.shape), "dtype": str(v.dtype)}
                                            for k, v in arrays.items()},
                "constants": dict(constants or {})}
        # no input schema: MLflow's would refuse integer columns for float arguments (int64 -> float64
        # is "unsafe" to it); each column is cast to its argument's dtype in RunnerModel._inputs
        signature = ModelSignature(inputs=None, params=params)
    else:
        data = np.asarray(data)
        meta = {"method": method, "shape": list(data.shape[1:]), "dtype": str(data.dtype)}
        signature = ModelSignature(inputs=Schema([TensorSpec(data.dtype, (-1, *data.shape[1:]))]), params=params)
    try:
        requires = [r for r in importlib.metadata.requires("runner") or [] if "extra ==" not in r]
    except importlib.metadata.PackageNotFoundError:
        requires = []
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "model.json").write_text(json.dumps(meta))
        artifacts = {**{k: str(v) for k, v in files.items()}, "model.json": str(Path(tmp) / "model.json")}
        with warnings.catch_warnings(), no_requirement_check():
            warnings.simplefilter("ignore", UserWarning)  # "no input example": one would run the model to log it
            return mlflow.pyfunc.log_model(name="model", python_model=str(Path(__file__).with_name("pyfunc_code.py")),
                                           artifacts=artifacts, signature=signature,
                                           pip_requirements=requires).model_id


@contextlib.contextmanager
def no_requirement_check():
    """MLflow checks the requirements against the installed packages by mapping every installed
    module to its distribution (~0.9 s per process, most of what logging the model costs). Ours
    are read from this very installation's metadata, so the check can only agree: skip it."""
    import mlflow.utils.environment as env

    check = getattr(env, "warn_dependency_requirement_mismatches", None)
    if check is None:  # another MLflow: let it check
        yield
        return
    env.warn_dependency_requirement_mismatches = lambda requirements: None
    try:
        yield
    finally:
        env.warn_dependency_requirement_mismatches = check
