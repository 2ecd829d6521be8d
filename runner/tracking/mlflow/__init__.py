"""tracking=mlflow: runner's events in an MLflow store (backend.py; store.py: MLflow's client in
the tracking worker; reach.py: the store reached before any fit; pyfunc.py: the fitted model as an
MLflow pyfunc model). The only place in runner that imports mlflow or speaks its words."""
from runner.tracking.mlflow.backend import MlflowTracking  # noqa: F401 (conf/tracking/mlflow.yaml's _target_)
