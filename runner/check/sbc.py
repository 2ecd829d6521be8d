"""check=sbc: simulation-based calibration of the configured inference on the configured model
(Talts et al. 2018), with the graphical test of Säilynoja et al. (2022): simultaneous ECDF bands.

1. `simulations` parameter sets are drawn from the model's prior and a data set from each
   (NumPyro's `Predictive` on the model with its observed sites unobserved: the data's observed
   arrays are replaced, its covariates and sizes kept).
2. Each data set is fitted with exactly the configured inference. A method that can (its
   `simulation_fit`: SVI with every guide, NUTS) gives a pure function (root, data) -> draws, and
   the simulations are one compiled program over it (`jax.vmap`, data a per-row argument), split
   into chunks when the memory budget (runner/inference/budget.py) says the whole does not fit.
   Any other method (EM), a model that computes with its data's values (NumPy on the data), or
   `check.batch=false` fits them one at a time with the method's own `fit`.
3. The rank of each true value among `draws` posterior draws, per latent site and element, and
   their verdict (runner/check/ranks.py): calibrated / underdispersed / overdispersed / biased.

Keys: the simulations are drawn from fold_in(PRNGKey(seed), SIM_STREAM); simulation i is fitted
with the root key PRNGKey(seed + i), as a run with seed=seed+i on that data set would be.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from runner import schema
from runner.errors import ConfigError, describe
from runner.inference.base import FitContext, FitOutput, Method

SIM_STREAM = 0x5BC
KEY_DERIVATION = ("simulations: Predictive(fold_in(PRNGKey(seed), 0x5bc)); simulation i fitted with "
                  "root PRNGKey(seed+i) as the method derives its keys from a root")


@dataclass
class SBC(Method):
    """conf/check/sbc.yaml: its settings; `wrap` makes it the run's method around the configured one."""
    simulations: int = schema.setting(100, schema.integer(2))
    draws: int = schema.setting(100, schema.integer(1))
    prob: float = schema.setting(0.95, schema.probability)
    chunk: int | None = schema.setting(None, schema.optional(schema.positive_int, null="as the memory budget allows"))
    batch: bool = True
    method: Any = field(default=None, init=False)  # the configured inference, fitted on every simulation
    simulator: Any = field(default=None, init=False)  # Simulator of the model and its data

    name = "sbc"

    def wrap(self, method: Method, model, data) -> "SBC":
        """This check around `method`, its refusals first: a model whose data cannot be simulated,
        replicates (the simulations are the replicates here)."""
        if getattr(method, "replicates", 1) != 1:
            raise ConfigError("check=sbc fits its simulations side by side as replicates do: drop replicates")
        self.method = method
        self.name = method.name  # the run's `inference` tag stays the method's
        self.groups = (*method.groups, "check")
        self.simulator = Simulator.of(model, data)
        return self

    def label(self, choices: dict) -> str:
        return self.method.label(choices)

    def fit(self, exp, context: FitContext = FitContext()) -> FitOutput:
        import dataclasses

        inner = dataclasses.replace(exp, inference=self.method)
        truths, sims = self.simulator.draw(exp.seed, self.simulations)
        started = time.perf_counter()
        draws, mode = self.fit_all(inner, sims, context)
        seconds = time.perf_counter() - started
        from runner.check import ranks

        draws = {n: matched(draws[n], truths[n]) for n in self.simulator.latent if n in draws}
        latent = [n for n in self.simulator.latent if draws.get(n) is not None]
        if not latent:
            raise ConfigError(f"inference={self.method.name} gives no draws of the latent sites "
                              f"{self.simulator.latent}: nothing to rank")
        found = {n: ranks.rank(truths[n], draws[n]) for n in latent}
        kept = min(draws[n].shape[1] for n in latent)  # fewer than check.draws: a short chain
        report = ranks.Report.of(found, kept, self.prob)
        return output(self, report, found, truths, seconds, mode)

    def fit_all(self, inner, sims, context: FitContext) -> tuple[dict, str]:
        """site -> (simulations, draws, ...) posterior draws of every simulation, and how they were
        fitted (one program, N chunks, one at a time)."""
        import sys

        fn = self.method.simulation_fit(inner) if self.batch else None
        if fn is not None:
            try:
                return batched(fn, inner.seed, sims, self.draws, self.chunk, context)
            except ConcreteData as e:
                print(f"runner: note: check=sbc fits the simulations one at a time: {e}", file=sys.stderr)
        return one_at_a_time(inner, self.method, sims, self.draws, context), "one at a time"

    def extras(self, exp, out: FitOutput, run_dir: Path) -> list[str]:
        """sbc_ranks.npz (ranks and true values per site), sbc.json (the verdicts and their
        numbers), plots/sbc_ecdf.png (the ECDF-difference plot with its simultaneous band)."""
        from runner import figures
        from runner.outputs import write_json

        report, found, truths = out.extras["report"], out.extras["ranks"], out.extras["truths"]
        np.savez_compressed(run_dir / "sbc_ranks.npz", **{f"rank/{n}": r for n, r in found.items()},
                            **{f"true/{n}": truths[n] for n in found}, draws=np.asarray(report.draws))
        files = ["sbc_ranks.npz", write_json(run_dir / "sbc.json", report.as_json())]
        if figures.sbc_plot(report, run_dir / "plots" / "sbc_ecdf.png"):
            files.append("plots/sbc_ecdf.png")
        return files


def output(check: SBC, report, found: dict, truths: dict, seconds: float, mode: str) -> FitOutput:
    scalars = {"sbc_simulations": check.simulations, "sbc_draws": report.draws, "sbc_seconds": seconds,
               "sbc_sites_calibrated": sum(s.verdict == "calibrated" for s in report.sites.values()),
               **report.metrics()}
    tags = {"check": "sbc", "sbc_verdict": report.verdict, "sbc_fit": mode,
            **{f"sbc/{n}": s.verdict for n, s in report.sites.items()}}
    line = (f"sbc simulations={check.simulations} draws={report.draws} ({mode}, {seconds:.3g}s): "
            + "; ".join(s.words(n) for n, s in report.sites.items()))
    return FitOutput(method=check.method.name, scalars=scalars, line=line, key_derivation=KEY_DERIVATION,
                     tags=tags, extras={"report": report, "ranks": found, "truths": truths})


def matched(draws, truth):
    """(S, L, ...) draws in the shape of the site's (S, ...) true values (EM's locs are (K, 1) for
    the model's (K,)); None where they are not the same values."""
    shape = (*draws.shape[:2], *truth.shape[1:])
    return draws.reshape(shape) if int(np.prod(draws.shape[2:])) == int(np.prod(shape[2:])) else None


class ConcreteData(Exception):
    """The model needs its data's values where the simulations' data are traced."""


def batched(fn, seed: int, sims, draws: int, chunk: int | None, context: FitContext) -> tuple[dict, str]:
    """`fn` (root, data) -> site -> (D, ...) draws, vmapped over the simulations as one compiled
    program; in chunks of `chunk` simulations, or of as many as the memory budget allows (halved
    until the compiled program fits). The last chunk is padded: one compile for all."""
    import jax

    from runner.inference.budget import OverBudget, compile_within_budget
    from runner.inference.restarts import root_keys

    S = sims.count
    roots = root_keys([seed + i for i in range(S)])
    program = jax.jit(jax.vmap(lambda r, d: thin(fn(r, d), draws), in_axes=(0, sims.axes)))
    size = min(chunk or S, S)
    while True:
        try:
            compiled = compile_within_budget(program, roots[:size], sims.rows(0, size),
                                             what=f"check=sbc ({size} simulations in one program)",
                                             hint="set check.chunk to fewer simulations")
            break
        except OverBudget:
            if chunk or size == 1:
                raise
            size = -(-size // 2)
        except _needs_values() as e:  # a model's own NumPy on its data (its init values, say)
            raise ConcreteData(describe(e)) from None
    parts = []
    for start in range(0, S, size):
        idx = np.minimum(np.arange(start, start + size), S - 1)  # the last chunk padded with its last row
        out = compiled(roots[idx], sims.take(idx))
        parts.append(jax.tree.map(lambda x: np.asarray(x)[: min(size, S - start)], out))
        if context.safe_point is not None:
            context.safe_point()
    chunks = len(parts)
    return ({k: np.concatenate([p[k] for p in parts]) for k in parts[0]},
            "one program" if chunks == 1 else f"{chunks} programs of {size}")


def thin(draws: dict, num: int) -> dict:
    """`num` draws evenly spaced through the draws (chains after chains): independent draws lose
    nothing, Markov chains lose autocorrelation (Talts et al. thin to about the effective size)."""
    import jax.numpy as jnp

    out = {}
    for k, v in draws.items():
        n = v.shape[0]
        idx = np.linspace(0, n - 1, min(num, n)).round().astype(int) if n > num else np.arange(n)
        out[k] = v[jnp.asarray(idx)]
    return out


def one_at_a_time(inner, method: Method, sims, draws: int, context: FitContext) -> dict:
    """Every simulation fitted alone by the method's own `fit` (seed+i on data set i): draws, or
    a point estimate repeated as `draws` draws (EM: ranks 0 or L, as autodelta's guide draws are)."""
    import dataclasses

    parts = []
    for i in range(sims.count):
        exp = dataclasses.replace(inner, data=sims.one(i), seed=inner.seed + i)
        out = method.fit(exp, FitContext(safe_point=context.safe_point))
        if out.failed:
            parts.append(None)
            continue
        point = out.latents or out.params or {}  # EM: its fitted parameters, by the model's site names where they are
        got = out.flat() if out.draws else {k: np.repeat(np.asarray(v)[None], draws, axis=0) for k, v in point.items()}
        parts.append({k: np.asarray(v) for k, v in thin(got, draws).items()})
        if context.safe_point is not None:
            context.safe_point()
    first = next((p for p in parts if p is not None), None)
    if first is None:
        return {}
    fill = {k: np.full_like(v, np.nan, dtype=float) for k, v in first.items()}
    return {k: np.stack([(p or fill)[k] for p in parts]) for k in first}


def _needs_values() -> tuple:
    import jax

    return (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError,
            jax.errors.TracerIntegerConversionError, jax.errors.TracerBoolConversionError)


@dataclass
class Sims:
    """The simulated data sets: the data with its observed arrays stacked along a first axis of
    `count` (the rest shared)."""
    data: Any  # one array (S, ...), or a dict of named arrays: observed ones (S, ...), covariates as they are
    axes: Any  # vmap's in_axes of `data`
    count: int

    def rows(self, start: int, stop: int):
        return self.take(np.arange(start, stop))

    def take(self, idx):
        import jax.numpy as jnp

        if not isinstance(self.data, dict):
            return jnp.asarray(self.data[idx])
        return {k: jnp.asarray(v[idx] if self.axes[k] == 0 else v) for k, v in self.data.items()}

    def one(self, i: int):
        if not isinstance(self.data, dict):
            return np.asarray(self.data[i])
        return {k: np.asarray(v[i] if self.axes[k] == 0 else v) for k, v in self.data.items()}


@dataclass
class Simulator:
    """What simulating the model's data needs: the model, the data, which data array each
    observed site observes, the latent sites whose true values are kept."""
    model: Any
    data: Any
    observed: dict  # observed site -> the data's key ("" for one unnamed array)
    latent: list

    @classmethod
    def of(cls, model, data) -> "Simulator":
        """Refused in one line (a ConfigError) where the model cannot simulate its data."""
        from runner import posterior

        if data is None:
            raise ConfigError(f"check=sbc simulates data sets, but model '{model.name}' takes no data: it has no "
                              "observed sites to simulate")
        if getattr(model, "concrete", False):
            raise ConfigError(f"check=sbc cannot feed simulated data to model '{model.name}': it computes with its "
                              "data's values (NumPy on the data), so its data are fixed in the program")
        sites = posterior.model_sites(model, data)
        roles = posterior.roles(model, data)
        for name in roles.observed:
            fn = sites[name]["fn"]
            if type(fn).__name__ == "Unit":
                raise ConfigError(f"check=sbc cannot simulate model '{model.name}': site '{name}' is a factor "
                                  "(numpyro.factor), a log-density term that draws nothing")
        for name in [*roles.latent, *roles.observed]:
            if improper(sites[name]["fn"]):
                raise ConfigError(f"check=sbc cannot simulate model '{model.name}': site '{name}' has an improper "
                                  f"prior ({type(improper(sites[name]['fn'])).__name__}), which cannot be sampled")
        if not roles.observed:
            raise ConfigError(f"check=sbc cannot simulate model '{model.name}': it has no observed sites")
        observed = observed_keys(model, data, roles.observed)
        missing = [n for n in roles.observed if n not in observed]
        if missing:
            raise ConfigError(f"check=sbc cannot simulate model '{model.name}': observed site '{missing[0]}' does not "
                              "observe one of the data's arrays (its obs= is computed from them), so simulated "
                              "values cannot take its place: pass the data array itself as obs=")
        sim = cls(model=model, data=data, observed=observed, latent=list(roles.latent))
        try:
            sim.draw(0, 2)
        except ConfigError:
            raise
        except Exception as e:
            raise ConfigError(f"check=sbc: model '{model.name}' cannot simulate data from its prior: {describe(e)}") from None
        return sim

    def draw(self, seed: int, count: int) -> tuple[dict, Sims]:
        """(latent site -> (count, ...) true values, the `count` simulated data sets)."""
        import jax
        import jax.numpy as jnp
        from numpyro.infer import Predictive

        from runner.posterior import unobserve

        key = jax.random.fold_in(jax.random.PRNGKey(seed), SIM_STREAM)
        args = (jax.tree.map(jnp.asarray, self.data),)
        names = [*self.latent, *self.observed]
        drawn = Predictive(unobserve(self.model), num_samples=count, return_sites=names)(key, *args)
        truths = {n: np.asarray(drawn[n]) for n in self.latent}
        if not isinstance(self.data, dict):
            (site,) = self.observed
            values = like(drawn[site], self.data)
            return truths, Sims(values, 0, count)
        by_key = {key: site for site, key in self.observed.items()}
        data, axes = {}, {}
        for k, v in self.data.items():
            if k in by_key:
                data[k] = like(drawn[by_key[k]], v)
                axes[k] = 0
            else:
                data[k], axes[k] = np.asarray(v), None
        return truths, Sims(data, axes, count)


def like(values, data) -> np.ndarray:
    """Simulated values in the data's dtype (0/1 tosses as the data's integers), unless that would
    round them (integer data of a continuous likelihood, eight schools' y: they stay floats)."""
    values, dtype = np.asarray(values), np.asarray(data).dtype
    if np.issubdtype(dtype, np.integer) and not np.array_equal(values, np.round(values)):
        return values
    return values.astype(dtype, copy=False)


def observed_keys(model, data, observed: list) -> dict:
    """observed site -> the data's key it observes ("" for one unnamed array)."""
    from runner.posterior import model_sites

    if not isinstance(data, dict):
        return {observed[0]: ""} if len(observed) == 1 else {}
    found: dict = {}

    def match(trace, arrays):  # by identity: the function passed the array itself as obs=
        for name, site in trace.items():
            if site["type"] == "sample" and site["is_observed"]:
                found.update({name: k for k, v in arrays.items() if site["value"] is v})

    model_sites(model, data, inspect=match)
    return found


def improper(fn):
    """The improper distribution under `fn`'s wrappers (Independent, Expanded, Masked), or None."""
    from numpyro.distributions import ImproperUniform

    while fn is not None:
        if isinstance(fn, ImproperUniform):
            return fn
        fn = getattr(fn, "base_dist", None)
    return None
