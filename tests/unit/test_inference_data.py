"""runner/inference_data.py: every run's inference_data.nc loads with arviz.from_netcdf and
arviz.summary / arviz.loo run on it, with numbers that have known answers: the coin's pointwise
log-likelihood is Bernoulli's, its PSIS-LOO the exact leave-one-out of Beta-Bernoulli; the GMM's
is the mixture's log sum_k w_k N(x | mu_k, s) per point (the assignment summed out); EM's point
estimate gives p_loo = 0 and elpd = N x avg_loglik."""
import math
import warnings

import numpy as np
import pytest
from conftest import run_recorded

from runner import inference_data

pytestmark = pytest.mark.usefixtures("xla_cache")

COIN = np.array([1.0] * 12 + [0.0] * 8)  # seed 004's data: 12 heads, 8 tails
# exact LOO of the coin under a uniform prior: leave a head out -> Beta(12, 9), p(head) = 12/21
COIN_EXACT_LOO = 12 * math.log(12 / 21) + 8 * math.log(8 / 21)


def load(run_dir):
    import arviz as az

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return az, az.from_netcdf(str(run_dir / inference_data.FILE))


def test_coin_file_has_every_group_and_the_exact_loo(tmp_path):
    record, out = run_recorded(tmp_path / "run", "model=coin", "guide=manual", "posterior.samples=1000")
    assert inference_data.FILE in record["artifacts"]
    az, idata = load(out.run_dir)
    assert set(idata.groups()) == {"posterior", "log_likelihood", "observed_data", "posterior_predictive"}
    f = idata.posterior["latent_fairness"].values
    assert f.shape == (1, 1000)
    np.testing.assert_array_equal(idata.observed_data["obs"].values, COIN)
    ll = idata.log_likelihood["obs"].values
    assert ll.shape == (1, 1000, 20)  # pointwise: one value per draw and observation
    np.testing.assert_allclose(ll, np.where(COIN == 1, np.log(f)[..., None], np.log1p(-f)[..., None]), rtol=1e-5)
    pp = idata.posterior_predictive["obs"].values
    assert pp.shape == (1, 1000, 20) and set(np.unique(pp)) <= {0.0, 1.0}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loo = az.loo(idata)
        summary = az.summary(idata)
    assert float(loo.elpd_loo) == pytest.approx(COIN_EXACT_LOO, abs=0.1)  # -14.436
    assert not loo.warning
    assert summary.loc["latent_fairness", "mean"] == pytest.approx(13 / 22, abs=0.02)


def test_gmm_nuts_chains_and_the_mixture_likelihood(tmp_path):
    from scipy.special import logsumexp
    from scipy.stats import norm

    _, out = run_recorded(tmp_path / "run", "model=gmm", "inference=nuts", "inference.chains=2")
    az, idata = load(out.run_dir)
    post = idata.posterior
    assert dict(post.sizes)["chain"] == 2 and dict(post.sizes)["draw"] == 250
    x = np.array([0.0, 1.0, 10.0, 11.0, 12.0])
    w, mu, s = post["weights"].values, post["locs"].values, post["scale"].values
    expected = logsumexp(np.log(w)[..., None, :] + norm.logpdf(x[:, None], mu[..., None, :], s[..., None, None]), axis=-1)
    np.testing.assert_allclose(idata.log_likelihood["obs"].values, expected, rtol=1e-4, atol=1e-5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert np.isfinite(float(az.loo(idata).elpd_loo))
        assert "r_hat" in az.summary(idata).columns


def test_em_point_estimate(tmp_path):
    record, out = run_recorded(tmp_path / "run", "model=gmm", "inference=em")
    az, idata = load(out.run_dir)
    assert idata.attrs["point_estimate"] == 1 and dict(idata.posterior.sizes)["draw"] == inference_data.POINT_DRAWS
    assert set(idata.posterior.data_vars) == {"weights", "locs", "variances"}  # EM's own parameters
    ll = idata.log_likelihood["obs"].values
    assert ll.mean(axis=-1)[0, 0] == pytest.approx(record["scalars"]["avg_loglik"], rel=1e-5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loo = az.loo(idata)
    # a point estimate: LOO is the plug-in log density (no correction), and every k is flagged
    assert float(loo.p_loo) == pytest.approx(0, abs=1e-4)  # (float32 sums)
    assert float(loo.elpd_loo) == pytest.approx(5 * record["scalars"]["avg_loglik"], rel=1e-5)
    assert loo.warning


def test_draws_are_capped():
    """At most MAX_DRAWS over all chains, and draws x values per draw within MAX_ELEMENTS: the
    tutorial keeps 1000 draws; 60,000 MNIST-size images (log-likelihood of 60,000 points plus
    20 x 784 locs per draw) keep 54 (16 MB of float32 before compression); at least 2 draws per
    chain are kept."""
    assert len(inference_data.kept_draws(1, 2000, 10)) == 1000
    assert len(inference_data.kept_draws(4, 250, 10)) == 250
    mnist = inference_data.kept_draws(1, 2000, 60000 + 20 * 784 + 784 + 20)
    assert len(mnist) == inference_data.MAX_ELEMENTS // (60000 + 20 * 784 + 784 + 20) == 54
    assert len(inference_data.kept_draws(2, 250, 10**9)) == 2


def test_no_entry_module_imports_arviz_or_what_writes_the_files():
    """ArviZ (~2.6 s to import), xarray, h5netcdf and matplotlib are not imported by runner's entry
    modules: a run imports h5netcdf and pyplot after its fit (a sweep's command in a
    background thread while its store opens: runner.outputs.load), ArviZ only where its functions run (LOO, the SBC check's band)."""
    import subprocess
    import sys

    code = ("import sys, runner, runner.app, runner.compare, runner.sweep, runner.loo, runner.inference_data, "
            "runner.outputs, runner.figures, runner.inference.svi, runner.inference.nuts, runner.inference.em; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('arviz', 'xarray', 'h5netcdf', 'matplotlib')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def arviz_layouts():
    """The layouts runs write: NUTS's chains with a vector site; one chain with a posterior
    predictive group; EM's (per-observation log-likelihood of 2-D observations: the names given
    for fewer dimensions than the array has); int and bool observations."""
    rng = np.random.default_rng(0)
    attrs = {"inference": "svi", "point_estimate": 0, "model": "m", "draws_per_chain": 5}
    yield ({"posterior": {"mu": rng.normal(size=(2, 5, 3)).astype(np.float32), "s": rng.normal(size=(2, 5))},
            "log_likelihood": {"obs": rng.normal(size=(2, 5, 7)).astype(np.float32)},
            "observed_data": {"obs": rng.normal(size=7).astype(np.float32)}}, {"obs": ["obs_dim_0"]}, attrs)
    yield ({"posterior": {"p": rng.uniform(size=(1, 6))}, "log_likelihood": {"obs": rng.normal(size=(1, 6, 4))},
            "observed_data": {"obs": np.array([1, 0, 1, 1]), "flag": np.array([True, False])},
            "posterior_predictive": {"obs": rng.integers(0, 2, size=(1, 6, 4))}}, {"obs": ["obs_dim_0"]}, attrs)
    yield ({"posterior": {"locs": rng.normal(size=(1, 4, 3, 5))}, "log_likelihood": {"obs": rng.normal(size=(1, 4, 6))},
            "observed_data": {"obs": rng.normal(size=(6, 5))}}, {"obs": ["obs_dim_0"]}, {**attrs, "point_estimate": 1})


@pytest.mark.parametrize("layout", range(3))
def test_the_file_is_what_arvizs_own_writer_writes(tmp_path, layout):
    """write_netcdf (h5netcdf alone) against arviz.from_dict(...).to_netcdf on the same draws: every
    group identical as xarray reads it back (values, dimensions, coordinates, attributes but the
    creation time and ArviZ's version), the same encoding (zlib, fill values), and the same PSIS-LOO."""
    import xarray as xr

    groups, dims, attrs = list(arviz_layouts())[layout]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import arviz as az
    az.from_dict(**groups, dims=dims, attrs=dict(attrs)).to_netcdf(str(tmp_path / "arviz.nc"))
    inference_data.write_netcdf(tmp_path / "runner.nc", groups, dims, attrs)
    for group in (None, *groups):
        with xr.open_dataset(tmp_path / "arviz.nc", group=group, engine="h5netcdf") as a, \
                xr.open_dataset(tmp_path / "runner.nc", group=group, engine="h5netcdf") as b:
            assert b.attrs.pop("created_at", "") if group else True
            a.attrs.pop("created_at", None), a.attrs.pop("arviz_version", None)
            xr.testing.assert_identical(a, b)
            for name in a.variables:
                ea, eb = ({k: v for k, v in x[name].encoding.items() if k != "source"} for x in (a, b))
                assert str(ea) == str(eb), (group, name)  # str: a _FillValue NaN is not equal to itself
    ours, theirs = az.from_netcdf(str(tmp_path / "runner.nc")), az.from_netcdf(str(tmp_path / "arviz.nc"))
    assert set(ours.groups()) == set(theirs.groups()) == set(groups)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert float(az.loo(ours).elpd_loo) == float(az.loo(theirs).elpd_loo)
