"""inference_data.nc: every run's posterior as an ArviZ InferenceData (netCDF), so that
`arviz.from_netcdf`, `arviz.summary`, `arviz.loo` and `arviz.compare` work on any run.

Groups: `posterior` (chains x draws of the latent and deterministic sites: NUTS's chains; for SVI
one chain of draws from the selected restart's guide; for a point estimate, EM or a Delta guide,
POINT_DRAWS copies of it, attribute `point_estimate=1`, so that ArviZ's functions run: their LOO
is then the plug-in log predictive density and every Pareto k is flagged), `log_likelihood`
(per observed site, per observation: NumPyro's `log_likelihood`; for models with enumerated
discrete sites the discrete sites are summed out per observation, as the fit does),
`observed_data` (each observed array up to MAX_OBSERVED values) and, with `posterior.samples`,
`posterior_predictive`.

Size: at most MAX_DRAWS draws (over all chains), and fewer where draws x (the sites' elements +
the observations + the predictive draws') would pass MAX_ELEMENTS (float32, so 16 MB before
compression); draws are thinned evenly. The file is written with h5netcdf (`write_netcdf`), as
ArviZ's own `to_netcdf` writes it: a run imports neither ArviZ nor xarray nor pandas (~1.5 s); ArviZ
is imported only where its functions are used (`runner compare --loo`, the SBC check's band).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

FILE = "inference_data.nc"
MAX_DRAWS = 1000
MAX_ELEMENTS = 2**22  # float32 values of the draws (16 MB, as posterior.npz), all groups together
MAX_OBSERVED = 2**22  # an observed array larger than this (60,000 MNIST images) is left out of observed_data
POINT_DRAWS = 4  # copies of a point estimate: arviz.loo needs more than one draw


def import_arviz():
    """arviz, without its INFO lines about optional packages (Hydra's logging shows INFO), nor
    the FutureWarning about its coming refactor that its import gives once a day (a user's
    terminal is no place for a dependency's migration notice: runner pins the ArviZ it uses)."""
    import logging
    import warnings

    from runner import background

    background.settled()  # the background import's, if one is under way (runner.outputs.load in a sweep)
    logging.getLogger("arviz").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r"\s*ArviZ is undergoing a major refactor",
                            category=FutureWarning, module="arviz")
    import arviz

    return arviz


def is_point(samples: dict) -> bool:
    """Every draw the same (a Delta guide's draws, an EM fit)."""
    return all(np.ptp(np.asarray(v), axis=0).max(initial=0) == 0 for v in samples.values())


def kept_draws(chains: int, draws: int, per_draw: int) -> np.ndarray:
    """Indices of the draws kept per chain: evenly thinned to MAX_DRAWS over all chains and to
    MAX_ELEMENTS values (at least 2 per chain where there are 2)."""
    keep = min(draws, max(1, MAX_DRAWS // chains), max(1, MAX_ELEMENTS // max(chains * per_draw, 1)))
    keep = max(keep, min(draws, 2))
    return np.unique(np.linspace(0, draws - 1, keep).round().astype(int))


def pointwise_loglik(model, data, samples: dict, kept=None) -> dict:
    """observed site -> (S, *its batch shape): log p(y_i | draw s) of every observation, for S
    flat draws of the latent sites. NumPyro's `log_likelihood`; a model with enumerated discrete
    sites gets them summed out per observation (log sum_z p(z) p(y_i | z)). `kept`: the
    experiment's kept programs (runner.inference.program_cache; a built-in model's
    log-likelihood is then one program read, not op by op), or None."""
    import jax

    from runner import posterior
    from runner.inference import program_cache

    args = () if data is None else (program_cache.on_device(data),)
    samples = program_cache.on_device(dict(samples))
    if not posterior.enumerated_sites(model, data):
        from numpyro.infer.util import log_likelihood

        if kept is None:  # op by op: a user's model may compute with its data's values
            out = log_likelihood(model, samples, *args, batch_ndims=1)
        else:
            program = jax.jit(lambda s, *a: log_likelihood(model, s, *a, batch_ndims=1))
            out = program_cache.run(kept, "log_likelihood", program, samples, *args)
        return {k: np.asarray(v) for k, v in out.items()}
    out = program_cache.run(kept, "enumerated_log_likelihood", enumerated_program(model, data), samples, *args)
    return {k: np.asarray(v) for k, v in out.items()}


#: the compiled per-draw log-likelihood of the last few models (a fused sweep's jobs share their
#: model object: one trace and compile for all of them, not one each)
_PROGRAMS: dict = {}


def enumerated_program(model, data):
    """jit(vmap(enumerated_loglik)) for `model`, kept for the same model object and data shapes."""
    import jax

    shapes = jax.tree.map(np.shape, data)
    key = (id(model), str(shapes))
    if key not in _PROGRAMS:
        one = enumerated_loglik(model, data)
        if len(_PROGRAMS) >= 4:
            _PROGRAMS.pop(next(iter(_PROGRAMS)))
        _PROGRAMS[key] = (model, jax.jit(jax.vmap(one, in_axes=(0,) + (None,) * (data is not None))))
    return _PROGRAMS[key][1]


def enumerated_loglik(model, data):
    """(latents, data) -> {observed site: log sum_z p(z) p(y_i | z)} for one draw: the model run
    under NumPyro's parallel enumeration; every enumerated site's log-probability is added to the
    observation's and the enumerated dimensions (left of the plates) are summed out. This is the
    mixture's per-observation likelihood when each observation has its own discrete sites."""
    import jax
    import jax.numpy as jnp
    from numpyro import handlers

    from runner import posterior

    def one(latents, *args):  # traced only where no kept program answers: funsor and the model's sites then
        from numpyro.contrib.funsor import enum

        sites = posterior.model_sites(model, data)
        plates = posterior.plate_depth(sites)
        shapes = {n: tuple(s["fn"].batch_shape) for n, s in sites.items()
                  if s["type"] == "sample" and s["is_observed"]}
        run = enum(handlers.substitute(handlers.seed(model, 0), data=latents), first_available_dim=-plates - 1)
        with handlers.block():
            tr = handlers.trace(run).get_trace(*args)
        enum_lp = sum((s["fn"].log_prob(s["value"]) for s in tr.values() if s["type"] == "sample"
                       and (s.get("infer") or {}).get("enumerate") == "parallel" and not s["is_observed"]), 0.0)
        out = {}
        for name, shape in shapes.items():
            site = tr[name]
            lp = jnp.asarray(site["fn"].log_prob(site["value"]) + enum_lp)
            lp = jax.nn.logsumexp(lp.reshape(-1, *lp.shape[lp.ndim - plates:]) if lp.ndim > plates else lp[None], 0)
            out[name] = lp.reshape(shape) if lp.size == int(np.prod(shape)) else jnp.broadcast_to(lp, shape)
        return out

    return one


def write(exp, run_dir: Path, samples: dict, **kwargs) -> list[str]:
    """`write_file`, never failing a fit that has finished: what goes wrong is one note on stderr
    and the run goes on without the file (a user's model whose log-likelihood cannot be traced);
    a full disk is the run's failure, as for any of its files."""
    try:
        return write_file(exp, run_dir, samples, **kwargs)
    except Exception as e:
        import sys

        from runner.errors import describe, disk_full

        if disk_full(e):
            raise  # the run's failure, in one line (runner.app), as any file's
        print(f"runner: note: no {FILE} for this run ({describe(e)})", file=sys.stderr)
        return []


def write_file(exp, run_dir: Path, samples: dict, chains: bool = False, predictive: dict | None = None,
               point_loglik: dict | None = None) -> list[str]:
    """inference_data.nc from the latent (and deterministic) draws `samples`: site -> (draws, ...)
    or, with `chains`, (chains, draws, ...); `predictive`: observed site -> (draws, ...) mock
    observations (posterior.samples); `point_loglik`: observed site -> per-observation
    log-likelihood of a point estimate whose parameters are not the model's sites (EM's).
    Returns the artifact paths ([] without data)."""
    if exp.data is None or not samples:
        return []
    from runner import posterior
    from runner.inference import program_cache

    samples = {k: np.asarray(v) for k, v in samples.items()}
    if not chains:  # one chain (draws of different sites may differ in number: keep the common ones)
        n = min(len(v) for v in samples.values())
        samples = {k: v[None, :n] for k, v in samples.items()}
    point = point_loglik is not None or is_point({k: v.reshape(-1, *v.shape[2:]) for k, v in samples.items()})
    if point:
        samples = {k: np.repeat(v[:1, :1], POINT_DRAWS, axis=1) for k, v in samples.items()}
    C, D = next(iter(samples.values())).shape[:2]
    observed = {k: np.asarray(v) for k, v in posterior.observed_data(exp.model, exp.data).items()}
    if not observed:
        names = posterior.observed_sites(exp.model, exp.data)
        observed = {n: None for n in names}
    sites = posterior.model_sites(exp.model, exp.data)
    points = sum(int(np.prod(sites[n]["fn"].batch_shape)) for n in observed)  # log-likelihood values per draw
    elements = sum(1 if v is None else v.size for v in observed.values())  # a mock data set per draw
    per_draw = sum(int(np.prod(v.shape[2:])) for v in samples.values()) + points + elements * (predictive is not None)
    idx = kept_draws(C, D, per_draw)
    samples = {k: v[:, idx] for k, v in samples.items()}
    S = C * len(idx)
    latent = set(posterior.latent_sites(exp.model, exp.data))
    flat = {k: v.reshape(S, *v.shape[2:]) for k, v in samples.items() if k in latent}
    if point_loglik is not None:
        loglik = {k: np.broadcast_to(np.asarray(v), (C, len(idx), *np.shape(v))) for k, v in point_loglik.items()}
    else:
        loglik = {k: v.reshape(C, len(idx), *v.shape[1:])
                  for k, v in pointwise_loglik(exp.model, exp.data, flat, program_cache.for_experiment(exp)).items()}
    groups = {"posterior": samples, "log_likelihood": loglik,
              "observed_data": {k: v for k, v in observed.items() if v is not None and v.size <= MAX_OBSERVED}}
    if predictive is not None:
        pp = {k: np.asarray(v) for k, v in predictive.items() if k in observed}
        n = min(len(v) for v in pp.values()) if pp else 0
        keep = np.unique(np.linspace(0, n - 1, min(n, MAX_DRAWS, max(1, MAX_ELEMENTS // max(per_draw, 1))))
                         .round().astype(int)) if n else []
        groups["posterior_predictive"] = {k: v[keep][None] for k, v in pp.items()} if n else {}
    dims = {}
    for name in observed:  # the same dimension names in every group where the site appears
        shape = next((g[name].shape[2:] for g in (loglik, groups.get("posterior_predictive") or {}) if name in g),
                     np.shape(observed[name]) if observed[name] is not None else ())
        dims[name] = [f"{name}_dim_{i}" for i in range(len(shape))]
    attrs = {"inference": exp.inference.name, "point_estimate": int(point), "model": exp.model.name,
             "draws_per_chain": len(idx)}
    run_dir.mkdir(parents=True, exist_ok=True)
    write_netcdf(run_dir / FILE, {g: v for g, v in groups.items() if v}, dims, attrs)
    return [FILE]


#: the groups whose arrays lead with (chain, draw), as ArviZ's from_dict lays them out
SAMPLED = ("posterior", "log_likelihood", "posterior_predictive")


def write_netcdf(path: Path, groups: dict, dims: dict, attrs: dict) -> None:
    """The file `arviz.from_dict(**groups, dims=dims, attrs=attrs).to_netcdf(path)` writes, written
    with h5netcdf alone: ArviZ, xarray and pandas cost a run ~1.5 s of imports, h5netcdf ~0.1 s.
    Per group (a netCDF group): one variable per site, zlib-compressed, with dimensions (chain,
    draw, *names) in the sampled groups and (*names) in observed_data, where names are dims[site]
    (as many as the array has) then <site>_dim_<i> for the rest; every dimension an integer
    coordinate 0..n-1; the group's `created_at`; `attrs` on the file and on observed_data, as ArviZ
    puts them. Floats carry _FillValue NaN and booleans
    are int8 with dtype="bool", as xarray encodes them, so that `arviz.from_netcdf` and
    `xarray.open_dataset` read back what ArviZ's own writer would have given them."""
    import datetime
    import io

    import h5netcdf

    created = datetime.datetime.now(datetime.timezone.utc).isoformat()
    buffer = io.BytesIO()  # HDF5 writes in memory: a full disk is then one plain write's OSError (it
    with h5netcdf.File(buffer, "w") as f:  # leaves HDF5 broken otherwise: a crash at the exit)
        f.attrs.update(attrs)
        for group, arrays in groups.items():
            g = f.create_group(group)
            g.attrs.update({"created_at": created, **(attrs if group == "observed_data" else {})})
            lead = ["chain", "draw"] if group in SAMPLED else []
            for name, value in arrays.items():
                value = np.asarray(value)
                given = list(dims.get(name) or [])[:value.ndim - len(lead)]  # then ArviZ's default names
                names = [*lead, *given, *(f"{name}_dim_{i}" for i in range(len(given), value.ndim - len(lead)))]
                for dim, size in zip(names, value.shape):
                    if dim not in g.dimensions:
                        g.dimensions[dim] = size
                        g.create_variable(dim, (dim,), data=np.arange(size, dtype=np.int64), compression="gzip")
                kind, extra = value.dtype.kind, {}
                if kind == "b":
                    value, extra = value.astype(np.int8), {"dtype": "bool"}
                var = g.create_variable(name, tuple(names), data=value, compression="gzip",
                                        fillvalue=np.nan if kind == "f" else None)
                var.attrs.update(extra)
    Path(path).write_bytes(buffer.getvalue())
