"""Figures written into the run directory (then logged as artifacts).

A figure never kills a run: each function here returns True when its file was written; one that
cannot be drawn (any loss scale, one restart, NaN or inf, a model's own figure failing) is
skipped with one warning line on stderr and returns False, and its file is not logged.

Where they are drawn: a run's figures (inside `elsewhere()`: runner.outputs.write) go to a helper
process of the command's own, started before JAX is imported (`start_helper`), which imports
matplotlib (~0.7 s) and draws them on the machine's other core while this process goes on with
the run's other files; `elsewhere()` waits for them on its way out, drops the files of figures
that were skipped and draws here what the helper could not (it is gone, or too slow). What would
make the helper import JAX, NumPyro or a user's code (a user's model draws its own figure, an
argument that holds a JAX array) is drawn here.
"""
from __future__ import annotations

import contextlib
import functools
import importlib
import os
import re
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np


def figure(fn):
    @functools.wraps(fn)
    def draw(*args, **kwargs) -> bool:
        path = kwargs.get("path") or next((a for a in args if isinstance(a, Path)), None)
        if _PENDING is not None and path is not None and _send(fn.__name__, args, kwargs, Path(path)):
            return True  # listed now: `elsewhere` drops it if the helper skips it
        try:
            fn(*args, **kwargs)
            return True
        except Exception as e:  # a figure is a courtesy: the fit and its numbers are kept
            from runner.errors import describe, disk_full

            if disk_full(e):
                _plt().close("all")
                raise  # a full disk is the run's failure (one line, runner.app), not a figure's

            name = Path(path).name if path is not None else fn.__name__
            print(f"runner: warning: figure {name} skipped ({describe(e)})", file=sys.stderr)
            try:
                _plt().close("all")
            except Exception:
                pass
            return False

    return draw


def save(fig, path: Path) -> None:
    """The figure as a PNG at 90 dpi, zlib level 3 (PIL's default 6 takes ~6 ms more per figure for
    files ~15% smaller), and closed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90, pil_kwargs={"compress_level": 3})
    import matplotlib.pyplot as plt

    plt.close(fig)


def load():
    """matplotlib's pyplot on the Agg backend (files, never a window)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# --- the helper process -----------------------------------------------------------------------------
_HELPER: "Helper | None" = None  # this process's (a forked child forgets its parent's: _forget_helper)
_PENDING: list | None = None  # inside `elsewhere()`: (request number, path, name, payload) of each figure sent
HELPER_WAIT_S = 120.0  # a figure the helper has not drawn by then is drawn here
#: what the helper may import to read a figure's arguments (JAX or NumPyro would cost it ~1.5 s, a
#: user's module runs the user's code again): anything else is drawn here
PORTABLE = ("builtins", "copyreg", "_codecs", "collections", "pathlib", "numpy", "runner")
_MODULE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")  # a dotted module name, nothing else


class Helper:
    """The command's side: requests (number, working directory, figure name, pickled arguments) go
    down one pipe through a sender thread (a large payload never blocks the run), answers (number,
    drawn, error, what it printed) come back up the other, in order. The helper process (a session
    of its own: a Ctrl-C of the terminal is the command's to handle) exits when the request pipe
    closes: when this process ends, however it ends (SIGKILL too)."""

    def __init__(self, preload: tuple[str, ...] = ()):
        import queue
        import subprocess
        import threading
        from multiprocessing.connection import Connection

        from runner.background import child_env

        preload = tuple(m for m in preload if _MODULE.fullmatch(m) and m.split(".")[0] == "runner")
        req_r, req_w = os.pipe()
        rep_r, rep_w = os.pipe()
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", f"from runner.figures import serve; serve({req_r}, {rep_w}, {preload!r})"],
                pass_fds=(req_r, rep_w), stdin=subprocess.DEVNULL, env=child_env(), start_new_session=True)
        except BaseException:
            for fd in (req_w, rep_r):
                os.close(fd)
            raise
        finally:
            os.close(req_r)
            os.close(rep_w)
        self.sent = 0
        self._out, self._in = Connection(req_w, readable=False), Connection(rep_r, writable=False)
        self._outbox: queue.Queue = queue.Queue()
        self._answers: dict = {}  # answers that came while another was waited for
        threading.Thread(target=self._send_loop, name="runner-figures-send", daemon=True).start()

    def _send_loop(self) -> None:
        while (message := self._outbox.get()) is not None:
            try:
                self._out.send_bytes(message)
            except OSError:
                break
        self._out.close()

    def send(self, name: str, payload: bytes) -> int:
        import pickle

        self.sent += 1
        self._outbox.put(pickle.dumps((self.sent, os.getcwd(), name, payload)))
        return self.sent

    def answer(self, number: int, timeout: float):
        """(drawn, error) of request `number`, what the figure said on stderr printed here;
        TimeoutError, EOFError (the helper is gone). Answers to other requests are kept for theirs."""
        import pickle

        while number not in self._answers:
            if not self._in.poll(timeout):
                raise TimeoutError(f"no figure from the helper in {timeout:.0f} s")
            got, drawn, error, said = pickle.loads(self._in.recv_bytes())
            self._answers[got] = (drawn, error, said)
        drawn, error, said = self._answers.pop(number)
        if said:
            print(said, end="", file=sys.stderr)
        return drawn, error

    def stop(self) -> None:
        """Ended now (it is gone or too slow): what was sent and not answered is drawn here."""
        self._outbox.put(None)
        try:
            self.proc.kill()
            self.proc.wait(5)
        except Exception:
            pass
        self._in.close()

    def forget(self) -> None:
        """In a forked child: this process's copy of the pipes closed (the helper is the parent's)."""
        for conn in (self._out, self._in):
            try:
                conn.close()
            except OSError:
                pass


def serve(req_fd: int, rep_fd: int, preload: tuple[str, ...] = ()) -> None:
    """The helper's loop: figures drawn one at a time, in order, until the command's pipe closes.
    Before the first request: matplotlib, its Agg canvas, and `preload` (runner's modules whose
    classes the figures' arguments will name, a model's: reading a figure's arguments imported
    them, on the way to a run's last file)."""
    import io
    import pickle
    import signal
    from multiprocessing.connection import Connection

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    inbox, out = Connection(req_fd, writable=False), Connection(rep_fd, readable=False)
    try:
        load()  # before the first figure comes
        import matplotlib.backends.backend_agg  # noqa: F401 (the first savefig's)

        import runner.background  # noqa: F401 (the first figure's, _plt)

        for module in preload:
            importlib.import_module(module)
        _warm_up()
    except Exception:
        pass
    while True:
        try:
            number, cwd, name, payload = pickle.loads(inbox.recv_bytes())
        except (EOFError, OSError):
            os._exit(0)  # the command is done (or gone); matplotlib's teardown would only cost time
        try:
            if cwd != os.getcwd():
                os.chdir(cwd)  # a relative run directory (a notebook that changed folders)
        except OSError:
            pass
        said = io.StringIO()  # a skipped figure's warning: the command prints it (a notebook shows its stderr)
        try:
            with contextlib.redirect_stderr(said):
                args, kwargs = pickle.loads(payload)
                drawn, error = globals()[name](*args, **kwargs), None
        except Exception as e:  # a full disk (a figure's own failure is its warning and False), or
            drawn, error = False, e  # arguments it cannot read: drawn by the command then
        try:
            out.send_bytes(pickle.dumps((number, drawn, error, said.getvalue())))
        except Exception:
            os._exit(0)


def _warm_up() -> None:
    """One small figure drawn and encoded in memory: the first figure's one-time costs (the font,
    the text layout's caches, the PNG encoder) paid before it is asked for."""
    import io

    plt = load()
    fig, ax = plt.subplots(figsize=(2, 1.5))
    ax.plot([0, 1], [1, 2], label="a")
    ax.set_title("t")
    ax.set_xlabel("x")
    ax.legend()
    fig.savefig(io.BytesIO(), format="png", dpi=30, pil_kwargs={"compress_level": 3})
    plt.close(fig)


def start_helper(preload: tuple[str, ...] = ()) -> None:
    """The helper process of this process, started now so that its imports are done by the time
    the fit is; at most one, and none on a single CPU (where it would only compete with the fit).
    `preload`: runner's modules that the figures' arguments will name (the model's), imported
    there after matplotlib. Nothing is raised: without a helper, figures are
    drawn here."""
    global _HELPER
    if _HELPER is not None:
        return
    cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)
    if len(cpus) < 2:
        return
    try:
        _HELPER = Helper(preload)
    except Exception:
        _HELPER = None


def _forget_helper() -> None:
    """A forked child (a launcher's worker, a user's multiprocessing) keeps no end of its parent's
    helper open, and starts its own where it needs one."""
    global _HELPER
    if _HELPER is not None:
        _HELPER.forget()
        _HELPER = None


os.register_at_fork(after_in_child=_forget_helper)


def _portable(args: tuple) -> bool:
    """Whether the helper can draw with these arguments: a model must be one of runner's own
    classes (a user's model, a function or a subclass, draws with the user's code)."""
    from runner.models.base import Model
    from runner.models.function import FunctionModel

    return not any(isinstance(a, FunctionModel) or (isinstance(a, Model) and not type(a).__module__.startswith(
        "runner.models.")) for a in args)


def _payload(args: tuple, kwargs: dict) -> bytes | None:
    """The arguments pickled, or None where reading them back would import a module outside
    PORTABLE (a JAX array, a user's object)."""
    import io
    import pickle
    import types

    class Foreign(Exception):
        pass

    class Checked(pickle.Pickler):
        def reducer_override(self, obj):
            named = isinstance(obj, (type, types.FunctionType, types.BuiltinFunctionType))
            module = (getattr(obj, "__module__", None) if named else type(obj).__module__) or ""
            if module.split(".")[0] not in PORTABLE:
                raise Foreign(module)
            return NotImplemented

    buffer = io.BytesIO()
    try:
        Checked(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump((args, kwargs))
    except Exception:  # Foreign, or what does not pickle
        return None
    return buffer.getvalue()


def _send(name: str, args: tuple, kwargs: dict, path: Path) -> bool:
    """The figure sent to the helper (True), or False: none started by this process, arguments it
    should not read (drawn here)."""
    if _HELPER is None or not _portable(args):
        return False
    payload = _payload(args, kwargs)
    if payload is None:
        return False
    _PENDING.append((_HELPER.send(name, payload), path, name, payload))
    return True


class Drawn:
    """What `elsewhere()` yields: after it, the paths of the figures the helper skipped."""

    def __init__(self):
        self.skipped: set[Path] = set()

    def kept(self, folder: Path, files: list[str]) -> list[str]:
        """`files` (relative to `folder`) less the skipped figures'."""
        return [f for f in files if folder / f not in self.skipped]


@contextlib.contextmanager
def elsewhere():
    """Figures drawn inside are sent to the helper (where this process started one); on the way
    out, each is waited for: one it skipped (its warning printed there) is in `skipped`, a full
    disk raised here, and one it could not draw (gone, too slow) drawn here instead. Leaving with
    an error (the run failed, a second Ctrl-C) waits for none of them."""
    global _PENDING
    outer, _PENDING = _PENDING, []
    drawn = Drawn()
    try:
        yield drawn
    except BaseException:  # the run failed or was stopped: its figures are not waited for
        _PENDING = outer
        raise
    pending, _PENDING = _PENDING, outer
    _collect(pending, drawn)


def _collect(pending: list, drawn: Drawn) -> None:
    import pickle

    from runner.errors import disk_full

    global _HELPER
    full = None
    for number, path, name, payload in pending:
        ok = error = None
        if _HELPER is not None:
            try:
                ok, error = _HELPER.answer(number, HELPER_WAIT_S)
            except Exception:  # the helper is gone or stuck: no more figures go there
                _HELPER.stop()
                _HELPER = None
        if error is not None and disk_full(error):
            full = full or error  # the run's failure, once every figure is answered
            continue
        if ok is None or error is not None:  # not drawn there: drawn here
            args, kwargs = pickle.loads(payload)
            ok = globals()[name](*args, **kwargs)
        if not ok:
            drawn.skipped.add(path)
    if full is not None:
        raise full


def _plt():
    from runner import background

    background.settled()  # a background import under way (a sweep's, runner.sweep): never two imports at once
    return load()


MAX_CURVES = 300


class Losses(NamedTuple):
    """What the loss plot draws of a fit: the selected restart's curve first (row 0), then at most
    MAX_CURVES others. Arrays and numbers only: the helper reads them without importing the
    method's modules (a FitResult named five of them: ~10 ms before the first figure), and a fit
    of 10,000 restarts sends the curves it draws, not all of them."""
    losses: np.ndarray  # (1 + others, P)
    steps: np.ndarray  # (P,)
    initial_losses: np.ndarray  # (R,)
    trained: int  # how many restarts were trained
    best: int  # the selected restart's index among all R
    final_loss: float
    initial_loss: float

    @classmethod
    def of(cls, result) -> "Losses":
        """From a fit result (runner.inference.svi.program.FitResult's fields)."""
        if isinstance(result, Losses):
            return result
        best = result.best_row
        rows = [best] + [row for row in range(len(result.losses)) if row != best][:MAX_CURVES]
        steps = getattr(result, "steps", None)
        steps = np.arange(result.losses.shape[1]) if steps is None else np.asarray(steps)
        return cls(np.asarray(result.losses)[rows], steps, np.asarray(result.initial_losses), len(result.trained),
                   int(result.best), float(result.final_loss), float(result.initial_loss))


def losses_of(result):
    """What the loss plot is sent: Losses, or `result` itself where they cannot be taken from it
    (loss_plot then says why in its warning: a figure never fails a run)."""
    try:
        return Losses.of(result)
    except Exception:
        return result


@figure
def loss_plot(result, path: Path) -> None:
    """All trained restarts' loss curves (at most MAX_CURVES), the selected one highlighted; with
    several restarts their initial losses beside, with one its initial loss in the title. `result`:
    Losses, or a fit result to take them from."""
    result = Losses.of(result)
    plt = _plt()
    if len(result.initial_losses) > 1:
        fig, (ax, ax0) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [3, 1]})
    else:  # one restart: its initial loss is in the title (a panel of one line would cost a third of the figure)
        (fig, ax), ax0 = plt.subplots(figsize=(8.25, 4)), None
    from matplotlib.collections import LineCollection

    steps, others = result.steps, result.losses[1:]
    if len(others):  # one collection: 10,000 separate lines take seconds
        segments = np.stack([np.broadcast_to(steps, (len(others), len(steps))), others], axis=-1)
        ax.add_collection(LineCollection(segments, colors="0.7", linewidths=0.5, alpha=0.5,
                                         label=f"other restarts ({len(others)} shown)"))
    ax.plot(steps, result.losses[0], color="C3", lw=1.5,
            label=f"selected restart {result.best} (final {result.final_loss:.4g})")
    finite = result.losses[np.isfinite(result.losses)]
    if finite.size and finite.min() > 0 and finite.max() / finite.min() > 100:
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (negative ELBO)")
    ax.legend()
    if ax0 is None:
        ax.set_title(f"1 restart (initial loss {result.initial_loss:.4g})")
        fig.subplots_adjust(left=0.1, right=0.98, bottom=0.13, top=0.91)
    else:
        ax.set_title(f"{result.trained} trained restart(s) of {len(result.initial_losses)}")
        inits = result.initial_losses[np.isfinite(result.initial_losses)]
        if np.unique(inits).size > 1:  # a histogram of one value has no width to bin
            ax0.hist(inits, bins=min(30, np.unique(inits).size), color="0.5", histtype="stepfilled")  # one patch
        if np.isfinite(result.initial_loss):
            ax0.axvline(result.initial_loss, color="C3")
        ax0.set_title("initial losses")
        # fixed margins for this fixed layout: tight_layout drew the figure once more (half its cost)
        fig.subplots_adjust(left=0.075, right=0.985, bottom=0.13, top=0.91, wspace=0.2)
    save(fig, path)


@figure
def sweep_plot(table: list[dict], curves: dict, path: Path) -> None:
    """A sweep's children: final loss per configuration (each seed a dot), and their loss curves."""
    plt = _plt()
    fig, (ax, ax1) = plt.subplots(1, 2, figsize=(12, 4.5))
    labels = [row["config"] for row in table]
    for i, row in enumerate(table):
        ax.errorbar([i], [row["mean"]], yerr=[row["std"]], fmt="o", color="C3", capsize=4)
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("final loss (mean +- std over seeds)")
    ax.set_title("Sweep: final loss per configuration")
    for run_id, curve in curves.items():
        ax1.plot(curve, lw=0.8, alpha=0.7)
    ax1.set_xlabel("step")
    ax1.set_ylabel("loss")
    ax1.set_title(f"loss curves of {len(curves)} child run(s)")
    fig.tight_layout()
    save(fig, path)


@figure
def curves_plot(curves: np.ndarray, best: int, path: Path, ylabel: str, title: str) -> None:
    """One curve per restart (NaN after it stopped), the kept one highlighted."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 4))
    for r in range(min(len(curves), MAX_CURVES)):
        if r != best:
            ax.plot(curves[r], color="0.7", lw=0.7)
    ax.plot(curves[best], color="C3", lw=1.5, label=f"kept restart {best}")
    ax.set_xlabel("iteration")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    save(fig, path)


@figure
def components_plot(model, samples: dict, data, path: Path) -> None:
    """The model's own figure from a dict of draws (one draw for a point estimate), laid out so
    that its labels and legends fit (tight_layout, a layout pass of ~30 ms); a figure of runner's
    own models with one set of axes keeps matplotlib's margins, which hold its title, labels and
    ticks (the coin's figure: 75 -> 42 ms, the tail of a tracking=none run)."""
    plt = _plt()
    fig = plt.figure(figsize=(8, 5))
    if isinstance(data, dict):
        data = {k: np.asarray(v) for k, v in data.items()}
    elif data is not None:
        data = np.asarray(data)
    model.figure(fig, samples, data)
    if len(fig.axes) > 1 or not type(model).__module__.startswith("runner.models."):
        fig.tight_layout()
    save(fig, path)


MAX_TRACE_SITES, MAX_TRACE_ELEMENTS = 6, 10


@figure
def trace_plot(samples: dict, path: Path) -> None:
    """MCMC traces: one panel per site (its first elements), one line per chain and element."""
    plt = _plt()
    names = list(samples)[:MAX_TRACE_SITES]
    fig, axes = plt.subplots(len(names), 1, figsize=(9, 2.2 * len(names)), squeeze=False)
    for ax, name in zip(axes[:, 0], names):
        x = samples[name]  # (chains, samples, ...)
        flat = x.reshape(x.shape[0], x.shape[1], -1)[..., :MAX_TRACE_ELEMENTS]
        for c in range(flat.shape[0]):
            for e in range(flat.shape[2]):
                ax.plot(flat[c, :, e], lw=0.6, color=f"C{e % 10}", alpha=0.8 if c == 0 else 0.5)
        ax.set_ylabel(name)
    axes[-1, 0].set_xlabel("NUTS sample")
    fig.tight_layout()
    save(fig, path)


@figure
def predictive_plot(draws: dict, observed: dict, path: Path) -> None:
    """Posterior predictive check, one row per observed site (at most MAX_TRACE_SITES): the
    distribution of its mock observations against its own data (pooled values, and each mock data
    set's mean against the data's). `observed`: site -> its data. Without observed data, the
    latent draws."""
    plt = _plt()
    rows = [(n, np.asarray(v, dtype=float)) for n, v in observed.items() if n in draws][:MAX_TRACE_SITES]
    if rows:
        fig, axes = plt.subplots(len(rows), 2, figsize=(11, 4 * len(rows)), squeeze=False)
        for (name, data), (ax, ax2) in zip(rows, axes):
            mock = np.asarray(draws[name], dtype=float)
            bins = np.histogram_bin_edges(np.concatenate([mock.ravel()[:200000], data.ravel()]), bins=40)
            ax.hist(mock.ravel(), bins=bins, density=True, alpha=0.5, label=f"mock {name} ({len(mock)} draws)")
            ax.hist(data.ravel(), bins=bins, density=True, histtype="step", color="k", lw=1.5, label=f"data of {name}")
            ax.set_title(f"{name}: values")
            ax.legend()
            ax2.hist(mock.reshape(len(mock), -1).mean(-1), bins=40, alpha=0.6, label="mean of each mock data set")
            ax2.axvline(data.mean(), color="k", lw=2, label=f"data mean {data.mean():.3g}")
            ax2.set_title(f"{name}: posterior predictive of the mean")
            ax2.legend()
    else:
        latents = [k for k in draws][:4]
        fig, axes = plt.subplots(1, max(1, len(latents)), figsize=(4 * max(1, len(latents)), 3.5), squeeze=False)
        for ax, name in zip(axes[0], latents):
            ax.hist(np.asarray(draws[name]).reshape(len(draws[name]), -1)[:, 0], bins=50, density=True)
            ax.set_title(f"posterior draws of {name}")
    fig.tight_layout()
    save(fig, path)


@figure
def sbc_plot(report, path: Path) -> None:
    """check=sbc: per latent site, the ECDF of its normalised ranks minus the uniform CDF (one line
    per element, the first 16) inside the simultaneous band (runner/check/ranks.py, ArviZ's band)."""
    from runner.check.ranks import MAX_ELEMENTS, ecdf

    plt = _plt()
    names = list(report.sites)
    cols = min(3, len(names))
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    x = report.eval_points
    for ax, name in zip(axes.ravel(), names):
        s = report.sites[name]
        ax.fill_between(x, report.lower - x, report.upper - x, color="C0", alpha=0.2,
                        label=f"{report.prob:.0%} simultaneous band")
        diff = ecdf(s.u[:, :MAX_ELEMENTS], x) - x[:, None]
        ax.plot(x, diff, color="C1" if s.verdict != "calibrated" else "C2", lw=1, alpha=0.8)
        ax.axhline(0, color="k", lw=0.5)
        ax.set_title(f"{name}: {s.verdict}", fontsize=10)
        ax.set_xlabel("normalised rank")
        ax.set_ylabel("ECDF - uniform")
    for ax in axes.ravel()[len(names):]:
        ax.set_visible(False)
    axes[0, 0].legend(fontsize=8, loc="lower right")
    fig.suptitle(f"SBC: {report.sites[names[0]].u.shape[0]} simulations, {report.draws} draws each", fontsize=11)
    fig.tight_layout()
    save(fig, path)
