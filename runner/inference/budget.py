"""The memory a compiled fit will need, checked against what the machine has before it runs: a
fit that cannot fit (restarts x data x components too large) is one line, exit 2, not an
out-of-memory kill minutes later. XLA's own analysis of the compiled program (arguments, outputs
and temporaries), so it holds for a user's model as for ours: SVI's program
(runner/inference/svi/loop.py) and EM's (runner/inference/em.py). What a run keeps of draws (NUTS's
chains, posterior.samples' predictive draws) is checked by its size before the run opens
(`check_bytes`: draws x the model's sites x bytes, runner.posterior.draw_bytes)."""
from __future__ import annotations

import os

from runner.errors import ConfigError

#: the share of the available memory a fit may plan to use (XLA's plan is close, not exact)
SHARE = 0.9


class OverBudget(ConfigError):
    """A compiled program plans more memory than there is (a fused sweep splits its group)."""


def available_bytes() -> int | None:
    """Free memory of the device the fit runs on: an accelerator's limit less what is in use, or
    the host's MemAvailable (Linux); None where it cannot be known."""
    import jax

    device = jax.devices()[0]
    if device.platform != "cpu":
        stats = device.memory_stats() or {}
        if "bytes_limit" in stats:
            return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
        return None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def needed_bytes(compiled) -> int | None:
    """Peak memory XLA planned for a compiled program (None if the backend does not say)."""
    try:
        m = compiled.memory_analysis()
    except Exception:
        return None
    if m is None:
        return None
    return int(m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes + m.temp_size_in_bytes)


def gb(n: int) -> str:
    return f"{n / 2**30:.1f} GB"


def compile_within_budget(jitted, *args, what: str = "the fit", hint: str = "", available: int | None = None,
                          kept=None):
    """`jitted` compiled ahead of time for `args` (arrays or jax.ShapeDtypeStruct: nothing is
    allocated) and checked: ConfigError if it plans more than SHARE of the available memory.
    Returns the compiled program (call it with arrays of those shapes). `kept`: (jitted, *args)
    -> the compiled program, from the experiment's kept programs (runner.inference.program_cache.compiled)."""
    compiled = jitted.lower(*args).compile() if kept is None else kept(jitted, *args)
    check_bytes(needed_bytes(compiled), what, hint, available)
    return compiled


def check_bytes(need: int | None, what: str, hint: str = "", available: int | None = None) -> None:
    """ConfigError (one line, with the remedy `hint`) if `need` bytes are more than SHARE of the
    available memory; for what is not one compiled program (a size estimate: draws kept)."""
    have = available_bytes() if available is None else available
    if need is not None and have is not None and need > SHARE * have:
        raise OverBudget(f"{what} needs {gb(need)} of memory, {gb(have)} is available"
                          + (f": {hint}" if hint else ""))
