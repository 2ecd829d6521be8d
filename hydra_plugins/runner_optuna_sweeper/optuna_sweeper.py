"""`hydra/sweeper=optuna` (runner/conf/hydra/sweeper/optuna.yaml): Hydra instantiates a sweeper
only from a class of the `hydra_plugins` package; the sweeper itself is runner.search.Search."""
from runner.search import Search


class OptunaSweeper(Search):
    """runner's Optuna sweeper (see runner/search.py)."""
