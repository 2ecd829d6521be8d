"""`python -m runner ...` and the `runner` console script. Thin: Hydra composes, app.run works.

Shell completion (bash): eval "$(runner -sc install=bash)"
"""
import hydra

from runner import CONF_DIR


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def _hydra_main(cfg):
    from runner.app import run

    return run(cfg)


def main() -> None:
    _hydra_main()


if __name__ == "__main__":
    main()
