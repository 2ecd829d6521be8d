"""tracking=mlflow: the MLflow backend (backend.py: the command's side; store.py: the store, in the
tracking worker process; pyfunc.py: the fitted model as an MLflow pyfunc model). The only place
that imports mlflow."""
