"""Example models for runner, found by name through a Hydra SearchPathPlugin."""
