"""Writes data/*.json (run from this folder: python make_data.py). Each example's data come from
its own file or docstring; where the example downloads its data, they are simulated from the
model (fixed parameters, fixed seed). posteriordb's data files are copied as they are by
benchmarks/any_model_reference.py --posteriordb <mirror>.
"""
import json
from pathlib import Path

import numpy as np

from jax import random
import jax.numpy as jnp

import numpyro
import numpyro.distributions as dist
from numpyro.infer import Predictive

import baseball
import zero_inflated_poisson

DATA = Path(__file__).parent / "data"


# examples/ucbadmit.py @ 0b935d48: the table in its docstring
UCBADMIT = """
     0      1         825         512
     0      0         108          89
     1      1         560         353
     1      0          25          17
     2      1         325         120
     2      0         593         202
     3      1         417         138
     3      0         375         131
     4      1         191          53
     4      0         393          94
     5      1         373          22
     5      0         341          24
"""


# examples/annotation.py @ 0b935d48, verbatim
def get_data():
    """
    :return: a tuple of annotator indices and class indices. The first term has shape
        `num_positions` whose entries take values from `0` to `num_annotators - 1`.
        The second term has shape `num_items x num_positions` whose entries take values
        from `0` to `num_classes - 1`.
    """
    # NB: the first annotator assessed each item 3 times
    positions = np.array([1, 1, 1, 2, 3, 4, 5])
    # fmt: off
    annotations = np.array(
        [[1, 1, 1, 1, 1, 1, 1], [3, 3, 3, 4, 3, 3, 4], [1, 1, 2, 2, 1, 2, 2],
         [2, 2, 2, 3, 1, 2, 1], [2, 2, 2, 3, 2, 2, 2], [2, 2, 2, 3, 3, 2, 2],
         [1, 2, 2, 2, 1, 1, 1], [3, 3, 3, 3, 4, 3, 3], [2, 2, 2, 2, 2, 2, 3],
         [2, 3, 2, 2, 2, 2, 3], [4, 4, 4, 4, 4, 4, 4], [2, 2, 2, 3, 3, 4, 3],
         [1, 1, 1, 1, 1, 1, 1], [2, 2, 2, 3, 2, 1, 2], [1, 2, 1, 1, 1, 1, 1],
         [1, 1, 1, 2, 1, 1, 1], [1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 1],
         [2, 2, 2, 2, 2, 2, 1], [2, 2, 2, 1, 3, 2, 2], [2, 2, 2, 2, 2, 2, 2],
         [2, 2, 2, 2, 2, 2, 1], [2, 2, 2, 3, 2, 2, 2], [2, 2, 1, 2, 2, 2, 2],
         [1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 1], [2, 3, 2, 2, 2, 2, 2],
         [1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 1], [1, 1, 2, 1, 1, 2, 1],
         [1, 1, 1, 1, 1, 1, 1], [3, 3, 3, 3, 2, 3, 3], [1, 1, 1, 1, 1, 1, 1],
         [2, 2, 2, 2, 2, 2, 2], [2, 2, 2, 3, 2, 3, 2], [4, 3, 3, 4, 3, 4, 3],
         [2, 2, 1, 2, 2, 3, 2], [2, 3, 2, 3, 2, 3, 3], [3, 3, 3, 3, 4, 3, 2],
         [1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 1], [1, 2, 1, 2, 1, 1, 1],
         [2, 3, 2, 2, 2, 2, 2], [1, 2, 1, 1, 1, 1, 1], [2, 2, 2, 2, 2, 2, 2]])
    # fmt: on
    # we minus 1 because in Python, the first index is 0
    return positions - 1, annotations - 1


# examples/proportion_test.py @ 0b935d48, verbatim
def make_dataset(rng_key) -> tuple[jnp.ndarray, jnp.ndarray]:
    """
    Make simulated dataset where potential customers who get a
    sales calls have ~2% higher chance of making another purchase.
    """
    key1, key2, key3 = random.split(rng_key, 3)

    num_calls = 51342
    num_no_calls = 48658

    made_purchase_got_called = dist.Bernoulli(0.084).sample(
        key1, sample_shape=(num_calls,)
    )
    made_purchase_no_calls = dist.Bernoulli(0.061).sample(
        key2, sample_shape=(num_no_calls,)
    )

    made_purchase = jnp.concatenate([made_purchase_got_called, made_purchase_no_calls])

    is_female = dist.Bernoulli(0.5).sample(
        key3, sample_shape=(num_calls + num_no_calls,)
    )
    got_called = jnp.concatenate([jnp.ones(num_calls), jnp.zeros(num_no_calls)])
    design_matrix = jnp.hstack(
        [
            jnp.ones((num_no_calls + num_calls, 1)),
            got_called.reshape(-1, 1),
            is_female.reshape(-1, 1),
        ]
    )

    return design_matrix, made_purchase


def simulated(model, params: dict, seed: int, **data) -> np.ndarray:
    """The model's observations drawn with its latent sites fixed at `params`."""
    conditioned = numpyro.handlers.condition(model, params)
    draws = Predictive(conditioned, num_samples=1)(random.PRNGKey(seed), **data)
    return np.asarray(draws["obs" if "obs" in draws else "Y"][0])


def write(name: str, data: dict) -> None:
    DATA.mkdir(exist_ok=True)
    plain = {k: (np.asarray(v).tolist() if np.ndim(v) else v) for k, v in data.items()}
    (DATA / f"{name}.json").write_text(json.dumps(plain))


def main():
    rows = np.array([line.split() for line in UCBADMIT.strip().splitlines()], dtype=int)
    DATA.mkdir(exist_ok=True)
    write("ucbadmit", dict(zip(["dept", "male", "applications", "admit"], rows.T)))
    positions, annotations = get_data()
    write("annotation", {"positions": positions, "annotations": annotations})
    write("funnel", {"dim": 10})
    write("binomial", {"n": 20, "k": 12})

    # proportion_test.py's main: rng_key, _ = random.split(random.key(3))
    rng_key, _ = random.split(random.key(3))
    design_matrix, outcome = make_dataset(rng_key)
    np.savez_compressed(DATA / "proportion_test.npz",  # 100,000 rows: npz, not JSON
                        design_matrix=np.asarray(design_matrix, dtype=np.int8),
                        outcome=np.asarray(outcome, dtype=np.int8))

    # ar2.py's main (num_data=142)
    num_data = 142
    rng_key = random.key(0)
    t = jnp.arange(0, num_data)
    y = jnp.sin(t) + random.normal(rng_key, (num_data,)) * 0.1
    write("ar2", {"y": y})

    # baseball.py downloads Efron and Morris's 18 players (45 at bats each): simulated here
    at_bats = np.full(18, 45)
    hits = simulated(baseball.partially_pooled_with_logit,
                     {"loc": -1.0, "scale": 0.2}, 0, at_bats=at_bats)
    write("baseball", {"at_bats": at_bats, "hits": hits})

    # zero_inflated_poisson.py downloads Stata's fish.dta (250 groups of campers): simulated here
    # with its columns [livebait, camper, persons, child, intercept]
    rng = np.random.default_rng(0)
    n = 250
    X = np.stack([rng.binomial(1, 0.86, n), rng.binomial(1, 0.59, n), rng.integers(1, 5, n),
                  rng.integers(0, 4, n), np.ones(n, dtype=int)], axis=1)
    Y = simulated(zero_inflated_poisson.model,
                  {"b1": jnp.array([-0.5, 0.3, -0.2, 0.8, -0.3]),
                   "b2": jnp.array([1.2, 0.6, 0.7, -1.1, -2.0])}, 1, X=X, Y=None)
    write("zip", {"X": X, "Y": Y})


if __name__ == "__main__":
    main()
