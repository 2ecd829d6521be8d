"""cfg -> parts: instantiate the model, data, guide builder, loss and optimizer, and refuse any
combination that cannot work before a fit starts (one ConfigError line each)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from omegaconf import DictConfig, ListConfig, OmegaConf

from runner.errors import ConfigError, describe

SELECT = ("initial", "final")
METHODS = ("svi", "em", "nuts")


@dataclass
class Experiment:
    model: Any
    data: Any  # numpy array, dict of named numpy arrays (a function model's keyword arguments), or None
    guide_builder: Callable  # (model, init_values) -> guide
    loss: Any  # numpyro ELBO
    optimizer: Any  # runner.optim.OptaxOptimizer | runner.optim.LBFGS
    steps: int
    restarts: int
    seed: int
    select: str
    replicates: int = 1
    deterministic: bool = False
    inference: dict = None  # conf/inference/<method>.yaml as a dict; method svi | em | nuts
    posterior_samples: int = 0

    @property
    def method(self) -> str:
        return self.inference["method"]


def check_targets(node, path: str = "") -> None:
    """Each `_target_` is a non-empty string. What the user types and the config files they point
    at are their own code: any target they name is used, as in Hydra. A config read back from a
    store is data: runner.predict and the pyfunc model hold it to runner.trust's rule."""
    if isinstance(node, DictConfig):
        for key in node.keys():
            child_path = f"{path}.{key}" if path else str(key)
            if key == "_target_":
                target = node._get_node(key)._value()
                if not isinstance(target, str) or not target.strip():
                    raise ConfigError(f"{child_path} must be a dotted path such as mymodels.MyModel, got {target!r}")
            else:
                check_targets(node._get_node(key), child_path)
    elif isinstance(node, ListConfig):
        for i, item in enumerate(node._iter_ex(resolve=False)):
            check_targets(item, f"{path}[{i}]")


def _positive_int(cfg, key: str) -> int:
    value = cfg[key]
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{key} must be a positive integer, got {value!r}")
    return value


def _instantiate(node, what: str):
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    from omegaconf.errors import MissingMandatoryValue

    try:
        return instantiate(node)
    except MissingMandatoryValue as e:
        key = getattr(e, "full_key", None) or what
        hint = " (model=fn needs model.fn=module.function)" if key == "model.fn" else ""
        raise ConfigError(f"{key} is required: set {key}=...{hint}") from None
    except InstantiationException as e:
        cause = e.__cause__
        if isinstance(cause, ConfigError):
            raise cause from None
        raise ConfigError(f"cannot build {what}: {describe(cause or e)}") from None


def build(cfg: DictConfig) -> Experiment:
    check_targets(cfg)
    steps, restarts = _positive_int(cfg, "steps"), _positive_int(cfg, "restarts")
    replicates = _positive_int(cfg, "replicates")
    if cfg.select not in SELECT:
        raise ConfigError(f"select must be one of {SELECT}, got {cfg.select!r}")
    if not isinstance(cfg.seed, int):
        raise ConfigError(f"seed must be an integer, got {cfg.seed!r}")
    if not isinstance(cfg.get("progress", True), bool):
        raise ConfigError(f"progress must be true or false, got {cfg.progress!r}")

    inference = check_inference(cfg)
    posterior_samples = cfg.get("posterior", {}).get("samples", 0)
    if not isinstance(posterior_samples, int) or isinstance(posterior_samples, bool) or posterior_samples < 0:
        raise ConfigError(f"posterior.samples must be an integer >= 0, got {posterior_samples!r}")

    model = _instantiate(cfg.model, "model")
    data = _instantiate(cfg.data, "data") if cfg.get("data") else None
    data = model.bind(data)
    common = dict(model=model, data=data, steps=steps, restarts=restarts, seed=cfg.seed, select=cfg.select,
                  replicates=replicates, inference=inference, posterior_samples=posterior_samples)
    if inference["method"] != "svi":
        if replicates > 1:
            raise ConfigError(f"replicates applies to inference=svi; for inference={inference['method']} "
                              "sweep seeds with -m seed=0,1,...")
        if inference["method"] == "em":
            if not model.has_em:
                raise ConfigError(f"inference=em has no updates for model '{model.name}': use model=gmm or "
                                  "model=bmm, attach EM extras (runner.model_extras), or use inference=svi")
            K = getattr(model, "K", None)
            if not isinstance(K, int) or isinstance(K, bool) or K < 1:
                raise ConfigError(f"inference=em needs the number of components K of model '{model.name}' "
                                  f"(a K in the data, or the function's K attribute), got {K!r}")
            model.em_data(data)
            if posterior_samples:
                raise ConfigError("posterior.samples needs a posterior: use inference=svi or inference=nuts "
                                  "(EM gives a point estimate)")
        return Experiment(guide_builder=None, loss=None, optimizer=None, **common)
    guide_builder = _instantiate(cfg.guide, "guide")
    loss = _instantiate(cfg.loss, "loss")
    if getattr(loss, "num_particles", 1) < 1:
        raise ConfigError("loss.num_particles must be >= 1")
    optimizer = _instantiate(cfg.optim, "optim")

    from numpyro.infer import TraceEnum_ELBO

    if model.enumerated and not isinstance(loss, TraceEnum_ELBO):
        raise ConfigError(f"model '{model.name}' has enumerated discrete sites: use loss=traceenum")
    exp = Experiment(guide_builder=guide_builder, loss=loss, optimizer=optimizer, **common)
    exp.deterministic = check_guide(exp)
    if optimizer.needs_deterministic and not exp.deterministic:
        raise ConfigError("optim=lbfgs needs a deterministic objective (e.g. guide=autodelta); "
                          "this guide samples, so use a stochastic optimizer such as optim=adam")
    return exp


def check_inference(cfg: DictConfig) -> dict:
    node = cfg.get("inference") or {"method": "svi"}
    inf = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)
    method = inf.get("method")
    if method not in METHODS:
        raise ConfigError(f"inference.method must be one of {METHODS}, got {method!r}")
    if method == "em":
        if not isinstance(inf.get("iterations"), int) or inf["iterations"] < 1:
            raise ConfigError(f"inference.iterations must be a positive integer, got {inf.get('iterations')!r}")
        for key in ("tol", "reg_covar"):
            if not isinstance(inf.get(key), (int, float)) or inf[key] < 0:
                raise ConfigError(f"inference.{key} must be a number >= 0, got {inf.get(key)!r}")
        if inf.get("init") not in ("kmeans", "random"):
            raise ConfigError(f"inference.init must be kmeans or random, got {inf.get('init')!r}")
    if method == "nuts":
        for key in ("warmup", "samples", "chains"):
            if not isinstance(inf.get(key), int) or inf[key] < (0 if key == "warmup" else 1):
                raise ConfigError(f"inference.{key} must be a positive integer, got {inf.get(key)!r}")
        if inf.get("init", "median") not in ("median", "uniform", "sample"):
            raise ConfigError(f"inference.init must be median, uniform or sample, got {inf.get('init')!r}")
        if not 0 < float(inf.get("target_accept", 0.8)) < 1:
            raise ConfigError(f"inference.target_accept must be in (0, 1), got {inf.get('target_accept')!r}")
    return inf


def _base(fn):
    while hasattr(fn, "base_dist"):
        fn = fn.base_dist
    return fn


def check_guide(exp: Experiment) -> bool:
    """Trace the guide and the model once: the guide's sample sites must be the model's latent
    sites (NumPyro only warns), and the objective is deterministic when every guide site is a
    Delta and every other latent site is enumerated."""
    import jax
    import numpyro.distributions as dist
    from numpyro import handlers
    from numpyro.infer.autoguide import AutoContinuous

    from runner.guides.auto import is_enumerated

    traces = {}

    def probe(data):  # traced abstractly by eval_shape: nothing is compiled or computed
        args = () if data is None else (data,)
        init_values = exp.model.init_values(jax.random.PRNGKey(0), data) if args else None
        try:
            guide = exp.guide_builder(exp.model, init_values)
        except TypeError as e:
            raise ConfigError(f"cannot build guide: {e}") from None
        if exp.model.enumerated and isinstance(guide, AutoContinuous):
            raise ConfigError(
                f"this guide cannot be used with model '{exp.model.name}': NumPyro's joint "
                "(AutoContinuous) guides fail under TraceEnum_ELBO in plated models; "
                "use guide=autodelta, autonormal or manual")
        with handlers.block():
            traces["guide"] = handlers.trace(handlers.seed(guide, 0)).get_trace(*args)
            replayed = handlers.replay(handlers.seed(exp.model, 1), trace=traces["guide"])
            traces["model"] = handlers.trace(replayed).get_trace(*args)
        return 0

    jax.eval_shape(probe, exp.data)
    guide_tr, model_tr = traces["guide"], traces["model"]

    def latent(tr):
        return {n: s for n, s in tr.items() if s["type"] == "sample" and not s["is_observed"]
                and not (s.get("infer") or {}).get("is_auxiliary")}

    model_latent, guide_latent = latent(model_tr), latent(guide_tr)
    extra = sorted(set(guide_latent) - set(model_latent))
    if extra:
        raise ConfigError(f"guide samples sites the model does not have: {extra}")
    missing = sorted(n for n, s in model_latent.items() if n not in guide_latent and not is_enumerated(s))
    if missing:
        raise ConfigError(f"guide does not cover the model's latent sites {missing}")
    for site in guide_tr.values():
        if site["type"] == "sample" and not site["is_observed"] and not is_enumerated(site):
            if not isinstance(_base(site["fn"]), dist.Delta):
                return False
    return True


def flatten(cfg: DictConfig) -> dict[str, str]:
    """Every leaf of the resolved config by dotted path (lists are leaves)."""
    out: dict[str, str] = {}

    def walk(node, prefix):
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{prefix}.{k}" if prefix else str(k))
        else:
            out[prefix] = str(node)

    walk(OmegaConf.to_container(cfg, resolve=True), "")
    return out
