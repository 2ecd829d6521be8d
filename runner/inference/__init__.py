"""Inference methods: one module each (svi, em, nuts), the same small surface (base.Method):
settings from conf/inference/<name>.yaml (`_target_` names the class), `prepare` (checks and
parts built from the config before any fit), `fit(experiment, context) -> FitOutput` (the same
type for every method) and `extras` (the method's own files). Adding a method is a module and a
YAML file.
"""
from runner.inference.base import Child, FitContext, FitOutput, Method, from_config  # noqa: F401
