"""Hydra finds this plugin by scanning the `hydra_plugins` namespace package of every installed
distribution; it appends this package's config folder to the search path of every Hydra app,
so runner's `model=` group gains the models in runner_example_models/conf/model/."""
from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin


class RunnerExampleModelsSearchPathPlugin(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        search_path.append(provider="runner-example-models", path="pkg://runner_example_models.conf")
