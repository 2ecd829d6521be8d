"""Cost of the progress line: the same fit run in one call (progress=false) and in chunks of
about a quarter of a second with the line written after each (what a terminal user sees),
side by side, alternating, after a warm-up call of each. Also checks that both give the same
numbers. Prints the median and the best wall times and their ratios (target: under 5% overhead),
and, since a shared 2-core machine varies by +-30% from call to call, the fixed cost of one
chunk boundary measured alone (a call that runs 0 steps, waits for it and reports), which
times the ~4 boundaries per second gives the overhead without the noise.

    python benchmarks/progress_overhead.py [steps] [restarts] [repeats]
"""
from __future__ import annotations

import io
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


class Terminal(io.StringIO):
    def isatty(self):  # render as on a terminal: rewritten every 0.25 s
        return True


def main(steps: int = 20000, restarts: int = 20, repeats: int = 5) -> None:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from runner.api import compose
    from runner.experiment import build
    from runner.inference.svi.program import make_programs
    from runner.progress import Progress

    cfg, _ = compose(["model=gmm", "guide=autodelta", "select=final", f"restarts={restarts}",
                      f"steps={steps}", "jax.cache_dir=null"])
    exp = build(cfg)
    programs = make_programs(exp)
    roots = jax.random.PRNGKey(0)[None]
    data = jnp.asarray(exp.data)

    def once(with_progress: bool):
        p = Progress(steps, stream=Terminal()) if with_progress else None
        t = time.perf_counter()
        out = jax.block_until_ready(programs.run(roots, data, p))
        return time.perf_counter() - t, out, p

    once(False), once(True)  # compile and warm up
    off, on, chunks, lines = [], [], [], []
    for _ in range(repeats):
        t, a, _ = once(False)
        off.append(t)
        t, b, p = once(True)
        on.append(t)
        chunks.append(p.updates)
        lines.append(p.printed)
    state, fixed = programs.prepare(roots, data)
    p = Progress(steps, stream=Terminal(), quiet_s=0.0, every_s=0.0)
    boundary = []
    for i in range(200):
        t = time.perf_counter()
        state, best = programs.advance(state, fixed, data, 1, 1)  # no steps: only the boundary
        p.update(1, float(best))
        boundary.append(time.perf_counter() - t)
    cost = statistics.median(boundary)
    same = all(np.array_equal(x, y, equal_nan=True) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
    t_off, t_on = statistics.median(off), statistics.median(on)
    print(f"GMM tutorial, autodelta, {restarts} restarts x {steps} steps, {repeats} alternating repeats "
          f"on {jax.devices()[0].device_kind}")
    print(f"  progress=false (one call):        median {t_off:7.3f} s  {sorted(round(x, 3) for x in off)}")
    print(f"  progress line (chunks of ~0.25 s): median {t_on:7.3f} s  {sorted(round(x, 3) for x in on)}"
          f"  ({statistics.median(chunks):.0f} chunks, {statistics.median(lines):.0f} redraws)")
    print(f"  overhead: median {100 * (t_on / t_off - 1):+.1f}%, best {100 * (min(on) / min(off) - 1):+.1f}%  "
          f"(target < 5%); same numbers: {same}")
    print(f"  one chunk boundary (call, wait, redraw): {cost * 1e3:.3f} ms -> "
          f"{100 * cost / Progress.chunk_s:.2f}% of a {Progress.chunk_s} s chunk")


if __name__ == "__main__":
    main(*[int(a) for a in sys.argv[1:]])
