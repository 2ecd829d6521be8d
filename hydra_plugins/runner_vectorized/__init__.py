"""runner's Hydra plugins live under `hydra_plugins` (Hydra instantiates launchers and sweepers
only from this namespace package)."""
