"""`python -m runner.predict run_id=<id> [data=...] [data.path=...]`: predictions for new data
from a logged run, without refitting.

The run's config (config.yaml) and fit (latents.json: the point estimate of the global latent
sites; params.json for EM; posterior.npz when it has one) are read back from the store. For
models with discrete sites (mixtures) it prints and writes each point's MAP assignment (and the
assignment probabilities for mixture families); for the others, posterior predictive draws of
the observations for the new data.

Options (key=value, Hydra style): run_id (required: the whole id, or its first 4 or more
characters, as runner.compare shows them), tracking.uri (default: runner's, the file
in this folder), tracking.timeout (seconds to reach the store, default 5),
data / data.* (the new data, as for `python -m runner`; default: the run's own data),
samples (posterior predictive draws, default 100), out (default predictions.json),
trust (packages, comma-separated, whose code a stored config may name, e.g. trust=mymodels).

A stored config is data, not code: whoever can write the store's artifacts wrote it. Its
`_target_`s and `model.fn` are used only if they resolve to runner's own components, a package
registered through a Hydra SearchPathPlugin, or a package named by trust= or by the environment
variable RUNNER_TRUST (comma-separated); otherwise one line, exit 2, nothing executed.
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from runner.errors import ConfigError
from runner.fitted import data_size, load_fitted, predict_data
from runner.outputs import PREDICT_FILES



def parse(argv: list[str]) -> dict:
    opts = {"tracking.uri": None, "tracking.timeout": "5", "samples": "100", "out": "predictions.json"}
    data = []
    for arg in argv:
        if "=" not in arg:
            raise ConfigError(f"arguments are key=value (run_id=..., data=...), got {arg!r}")
        key, value = arg.split("=", 1)
        if key == "data" or key.startswith("data."):
            data.append(arg)
        elif key in ("run_id", "tracking.uri", "tracking.timeout", "samples", "out", "trust"):
            opts[key] = value
        else:
            raise ConfigError(f"unknown option {key!r}: use run_id, data=..., data.*, tracking.uri, tracking.timeout, "
                              "samples, out, trust")
    if "run_id" not in opts:
        raise ConfigError("run_id=<id> is required (see `python -m runner.compare` for run ids)")
    try:  # checked before anything is fetched
        opts["samples"] = int(opts["samples"])
    except ValueError:
        raise ConfigError(f"samples must be a positive integer, got {opts['samples']!r}") from None
    if opts["samples"] < 1:
        raise ConfigError(f"samples must be a positive integer, got {opts['samples']}")
    opts["data"] = data
    return opts


def new_data(cfg, tags: dict, overrides: list[str], roots=None):
    """The run's data config with the data overrides applied, composed as the CLI does; held to
    runner.trust's rule for stored configs (`roots`: trusted packages, default trusted_roots())."""
    from omegaconf import OmegaConf

    from runner.api import compose
    from runner.checks import load_data
    from runner.trust import check_stored_config, trusted_roots

    node = cfg.data
    group = [o for o in overrides if o.startswith("data=")]
    if group:  # another data choice: composed as the CLI does (the model's own config is not needed)
        composed, _ = compose(overrides)
        node = composed.data
    elif overrides:  # the run's own data settings (binarize, n, ...), with the keys given changed
        node = OmegaConf.merge(cfg.data, OmegaConf.from_dotlist([o[len("data."):] for o in overrides]))
    check_stored_config(node, trusted_roots() if roots is None else roots, "data")
    return load_data(node)


def predict(opts: dict) -> dict:
    from runner.tracking import TrackingError, reader
    from runner.trust import trusted_roots

    roots = trusted_roots(opts.get("trust", ""))
    try:  # one line within the deadline, not a client's minutes of retries; never creates a store
        backend = reader(uri=opts["tracking.uri"], timeout=opts["tracking.timeout"])
    except TrackingError as e:
        raise ConfigError(str(e)) from None
    with tempfile.TemporaryDirectory() as tmp:
        try:
            opts["run_id"] = backend.whole_run_id(opts["run_id"])  # its first characters name it too
            tags = backend.fetch(opts["run_id"], PREDICT_FILES, Path(tmp))
        except LookupError as e:
            raise ConfigError(str(e)) from None
        fitted = load_fitted({p.name: p for p in Path(tmp).iterdir()}, tags.get("inference", "svi"), roots,
                             source=f"run {opts['run_id']}")
    data = new_data(fitted.cfg, tags, opts["data"], roots)
    out: dict = {"run_id": opts["run_id"], "inference": fitted.method, "n": data_size(data)}
    kind, found = predict_data(fitted, data, opts["samples"])
    for name, value in found.items():
        if kind == "assignments":  # and their probabilities
            out[name] = value.tolist()
        else:  # posterior predictive draws: their mean and spread per observation
            x = value.astype(float)
            out[name] = {"mean": x.mean(0).tolist(), "std": x.std(0).tolist(), "draws": len(x)}
    return out


def main(argv=None) -> int:
    from runner.console import current_folder_importable

    current_folder_importable()
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return 0
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        opts = parse(argv)
        out = predict(opts)
    except ConfigError as e:
        print(f"runner.predict: error: {e}", file=sys.stderr)
        return 2
    except (HydraException, OmegaConfBaseException) as e:
        from runner.console import one_line

        print(f"runner.predict: error: {one_line(e)}", file=sys.stderr)
        return 2
    Path(opts["out"]).write_text(json.dumps(out))
    shown = {k: v for k, v in out.items() if not k.endswith("_probs")}
    text = json.dumps(shown)
    print(text if len(text) < 2000 else text[:2000] + " ...")
    print(f"runner.predict: wrote {opts['out']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
