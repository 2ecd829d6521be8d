"""MLflow "models from code": the file that `mlflow.pyfunc.load_model` runs to get the model
(logged with each run by runner/tracking/mlflow/pyfunc.py; no pickled Python objects)."""
import mlflow.models

from runner.tracking.mlflow.pyfunc import RunnerModel

mlflow.models.set_model(RunnerModel())
