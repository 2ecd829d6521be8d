"""inference=svi: stochastic variational inference as one compiled program (method.py: the
settings and checks; program.py: the compiled fit)."""
from runner.inference.svi.method import SVI  # noqa: F401 (conf/inference/svi.yaml's _target_)
