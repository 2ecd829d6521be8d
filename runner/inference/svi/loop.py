"""The host side of the compiled fit (runner/inference/svi/program.py): `run` compiles `prepare` and
`advance` ahead of time within the memory budget (runner/inference/budget.py), then runs `advance`
in one call or in chunks, and between chunks writes the checkpoint, reports progress
(runner/progress.py) and calls the run's safe point. Chunks change no number: the same compiled
step runs on the same state.

Chunks: about `progress.chunk_s` (0.25 s) with a progress line; about 1 s with a safe point only;
min(checkpoint.every_s, 60 s) with checkpoints only; otherwise one call. A safe point that takes
reports (a search's trial with a pruner: `reports`, `report(step, best loss)`) gets them on a
fixed grid of steps instead, and may stop the fit (runner.errors.Pruned). Ctrl-C, SIGTERM
(SystemExit) or a safe point that raises: the last complete chunk is written (with checkpoints),
the progress line ends, and the exception goes on.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

#: the checkpoint's layout (runner.inference.svi.state.FitState): a file of another layout is refused
CARRY_FORMAT = "FitState/1"
#: seconds of steps between two safe points when nothing else asks for chunks
SAFE_POINT_S = 1.0


@dataclass
class Checkpoint:
    """Where and how often the fit writes its state (params, optimizer state, curves so far, the
    step reached), and whether to continue from what is there. Written between chunks of
    `advance` (never from inside the program), to a temporary file renamed over the last one."""
    path: object  # pathlib.Path of checkpoint.npz
    every_s: float = 60.0
    resume: bool = False
    config_hash: str = ""  # the fit's config (runner.identity.config_hash): another config's checkpoint is refused

    @property
    def saving(self) -> bool:
        return self.every_s < float("inf")

    def save(self, state, step: int) -> None:
        import os

        import jax

        leaves = jax.tree.leaves(jax.device_get(state))
        tmp = self.path.with_name(self.path.name + ".tmp.npz")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(tmp, step=np.asarray(step), config_hash=np.asarray(self.config_hash),
                 format=np.asarray(CARRY_FORMAT), **{f"leaf_{i}": np.asarray(x) for i, x in enumerate(leaves)})
        os.replace(tmp, self.path)

    def load(self, state) -> tuple[Any, int]:
        """(the saved state in the structure of `state`, the step it reached)."""
        import jax

        from runner.errors import ConfigError

        if not self.path.exists():
            raise ConfigError(f"resume: no checkpoint at {self.path}")
        with np.load(self.path) as f:
            saved_hash = str(f["config_hash"]) if "config_hash" in f else ""
            if self.config_hash and saved_hash and saved_hash != self.config_hash:
                raise ConfigError(f"resume: {self.path} was written by a run of another config: resume with "
                                  "the same command (and data) as that run, plus resume=...")
            leaves, tree = jax.tree.flatten(state)
            saved = [f[f"leaf_{i}"] for i in range(len(leaves))] if f"leaf_{len(leaves) - 1}" in f else None
            layout = str(f["format"]) if "format" in f else ""
            if (saved is None or layout != CARRY_FORMAT or f"leaf_{len(leaves)}" in f
                    or any(a.shape != b.shape or a.dtype != b.dtype for a, b in zip(saved, leaves))):
                raise ConfigError(f"resume: {self.path} was written by a different fit (config or runner version)")
            return jax.tree.unflatten(tree, [jax.numpy.asarray(x) for x in saved]), int(f["step"])


def compile_fit(programs, roots, data) -> tuple[Callable, Callable]:
    """(prepare, advance) compiled ahead of time; ConfigError if advance needs more memory than
    there is. Nothing is allocated before the check: prepare is compiled, not run, for its output
    shapes and shardings (restarts spread over devices), and advance is compiled for those."""
    import functools

    import jax

    from runner.inference import program_cache
    from runner.inference.budget import compile_within_budget

    cache = programs.cache  # the programs an earlier command traced, or None
    prepare = program_cache.compiled(cache, "prepare", programs.prepare, roots, data)  # its shapes, then its program
    shapes = jax.tree.map(lambda s, sharding: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding),
                          prepare.out_info, prepare.output_shardings)
    compiled = compile_within_budget(
        programs.advance, *shapes, data, 0, programs.steps, what="the fit",
        hint="fewer restarts, data.batch_size=<rows> (minibatches), or less data (data.n)",
        available=programs.available,
        kept=functools.partial(program_cache.compiled, cache, "advance", donate_argnums=(0,)))
    return prepare, on_its_devices(compiled)


def on_its_devices(compiled) -> Callable:
    """`compiled(state, fixed, ...)` with the state and the fixed parts placed as it was compiled
    for: on several devices XLA may lay out prepare's outputs, or advance's own, otherwise than
    advance's inputs (restarts sharded vs replicated), and a compiled program refuses arrays laid
    out otherwise. A no-op on one device or when the layouts agree."""
    import jax

    wanted = compiled.input_shardings[0][:2]
    if jax.device_count() == 1:
        return compiled

    def advance(state, fixed, *rest):
        return compiled(*jax.device_put((state, fixed), wanted), *rest)

    return advance


def chunk_seconds(progress, checkpoint: Checkpoint | None, safe_point) -> float | None:
    """Seconds of steps per chunk, or None when nothing runs between chunks (one call)."""
    if progress is not None:
        seconds = progress.chunk_s
    elif checkpoint is not None and checkpoint.saving:
        seconds = min(checkpoint.every_s, 60.0)
    else:
        seconds = None
    if safe_point is not None:
        seconds = SAFE_POINT_S if seconds is None else min(seconds, SAFE_POINT_S)
    return seconds


def run(programs, roots, data, progress=None, checkpoint: Checkpoint | None = None,
        safe_point: Callable[[], None] | None = None) -> dict:
    """The whole fit (`programs`: runner.inference.svi.program.Programs). With `checkpoint`, the
    state is written every `checkpoint.every_s` seconds (and at the end), and `checkpoint.resume`
    continues from the saved one: the same step keys on the same state, the same numbers. With
    early stopping, the chunks end once every restart has stopped. `programs.pruner` (a fused
    sweep's, runner.inference.svi.fused.Halving): chunks also end at its rungs, where it stops
    the worst jobs (a masked update, as early stopping's)."""
    pruner = programs.pruner
    from runner import timing

    with timing.phase("compile"):  # XLA, or its persistent cache
        prepare, advance = compile_fit(programs, roots, data)
    state, fixed = prepare(roots, data)
    start = 0
    if checkpoint is not None and checkpoint.resume:
        state, start = checkpoint.load(state)
    seconds = chunk_seconds(progress, checkpoint, safe_point)
    if seconds is None and start == 0 and pruner is None:  # one call
        state, _ = advance(state, fixed, data, 0, programs.steps)
    else:
        chunks = Chunks(advance, fixed, data, programs.steps, 1e9 if seconds is None else seconds,
                        Between(progress, checkpoint, safe_point), pruner)
        state = chunks.run(state, start)
    from runner.inference import program_cache

    return program_cache.run(programs.cache, "finish", programs.finish, state, fixed, roots, data)


def report_every(safe_point, steps: int) -> int | None:
    """Steps between two reports of a safe point that takes them (a search's trial with a pruner,
    `reports` per fit): chunks then end on that fixed grid, the same steps in every trial, so a
    pruner compares trials at the same steps. None: chunks sized by time."""
    reports = getattr(safe_point, "reports", None)
    return max(1, -(-steps // int(reports))) if reports else None


@dataclass
class Between:
    """What runs between two chunks: the checkpoint, the progress line, then the safe point."""
    progress: Any = None  # runner.progress.Progress
    checkpoint: Checkpoint | None = None
    safe_point: Callable[[], None] | None = None
    saved: float = field(default_factory=time.perf_counter)  # when the checkpoint was last written
    at_safe_point: bool = False  # the safe point is running (an exception from it stops the fit)

    def __call__(self, state, step: int, best: float) -> None:
        if self.checkpoint is not None and self.checkpoint.saving \
                and time.perf_counter() - self.saved >= self.checkpoint.every_s:
            self.checkpoint.save(state, step)
            self.saved = time.perf_counter()
        if self.progress is not None:
            self.progress.update(step, best)
        if self.safe_point is not None:
            self.at_safe_point = True
            report = getattr(self.safe_point, "report", None)  # a search's trial (runner/search.py)
            if report is not None:
                report(step, best)
            self.safe_point()
            self.at_safe_point = False


@dataclass
class Chunks:
    """Steps [start, steps) in chunks of about `chunk_s` seconds (the first one steps // 100 steps,
    then sized by the measured rate), with `between` after each."""
    advance: Callable  # compiled: (state, fixed, data, start, stop) -> (state, best loss at stop - 1)
    fixed: Any
    data: Any
    steps: int
    chunk_s: float
    between: Between
    pruner: Any = None  # rungs (steps at which a chunk ends) and (state, step) -> state

    def run(self, state, start: int):
        self.state = state  # the latest state, complete or not (advance donates the one it is given)
        self.done = (state, start)  # the last state known complete (a chunk's result waited for) and its step
        try:
            return self.loop(state, start)
        except BaseException as e:  # Ctrl-C / SIGTERM / the safe point: what was done is kept for resume=
            if isinstance(e, (KeyboardInterrupt, SystemExit)) or self.between.at_safe_point:
                self.keep_done()
            raise
        finally:  # also on Ctrl-C: end the terminal line
            if self.between.progress is not None:
                self.between.progress.close()

    def loop(self, state, start: int):
        chunk = max(1, self.steps // 100)
        every = report_every(self.between.safe_point, self.steps)
        while start < self.steps and not state.finished(self.steps):
            stop = min(self.steps, start + chunk if every is None else (start // every + 1) * every)
            if self.pruner is not None:
                stop = min([stop, *(r for r in self.pruner.rungs if r > start)])
            t = time.perf_counter()
            state, best = self.advance(state, self.fixed, self.data, start, stop)
            if self.pruner is not None and stop in self.pruner.rungs:
                state = self.pruner(state, stop)
            self.state = state
            best = float(best)  # waits for the chunk
            self.done = (state, stop)
            rate = (stop - start) / max(time.perf_counter() - t, 1e-9)
            self.between(state, stop, best)
            start, chunk = stop, max(1, int(rate * self.chunk_s))
        return state

    def keep_done(self) -> None:
        """Write the last complete chunk's state (with checkpoints), if it is the latest state."""
        checkpoint = self.between.checkpoint
        if checkpoint is not None and checkpoint.saving and self.done[0] is self.state and self.done[1] > 0:
            try:
                checkpoint.save(*self.done)
            except Exception:
                pass
