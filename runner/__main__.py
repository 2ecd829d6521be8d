"""`python -m runner ...` and the `runner` console script. Thin: Hydra composes, runner.lifecycle
handles Ctrl-C and SIGTERM, runner.app.run works.

Hydra's own errors (unknown option or key, bad override syntax) become one line on stderr and
exit code 2, as the runner's own config errors do; Ctrl-C exits 130 and SIGTERM 143.
Set HYDRA_FULL_ERROR=1 to get Hydra's full report instead.

Shell completion (bash): eval "$(runner -sc install=bash)"
"""
import os
import sys

from runner import CONF_DIR
from runner.console import current_folder_importable, one_line  # noqa: F401 (one_line: the CLI's)


def _hydra_main(cfg):
    """The Hydra task: `main` wraps it in hydra.main once the tracking worker is started (Hydra's
    and OmegaConf's imports, ~0.1 s, would delay the worker's own imports of MLflow)."""
    from runner.app import run

    return run(cfg)


def _completion_config_dir() -> None:
    """Hydra's bash completion queries `runner -sc query=bash` with the command line in COMP_LINE
    but without its flags, so `runner --config-dir myconf model=<TAB>` would not offer myconf's
    options: pass the line's --config-dir (-cd) on to the query."""
    line = os.environ.get("COMP_LINE")
    argv = sys.argv[1:]
    if not line or not any(a.startswith("query=") for a in argv) or any(
            a in ("-cd", "--config-dir") or a.startswith("--config-dir=") for a in argv):
        return
    words = line.split()
    for i, word in enumerate(words):
        value = words[i + 1] if word in ("-cd", "--config-dir") and i + 1 < len(words) else (
            word.split("=", 1)[1] if word.startswith("--config-dir=") else None)
        if value and os.path.isdir(os.path.expanduser(value)):
            sys.argv[1:1] = ["--config-dir", os.path.expanduser(value)]
            return


#: flags that name a config folder, path or name of the user's (argparse also takes them shortened)
CONFIG_FLAGS = ("-cd", "-cp", "-cn", "--config")
_MODE_KNOWN = False  # this command line composes runner's own configs alone: hydra.mode is unset


def _compose_once(argv: list[str]) -> None:
    """Hydra composes the whole config twice per command: once only to read `hydra.mode` (its
    Hydra.get_mode), then for the run (~0.07 s each). runner's own configs never set hydra.mode,
    so for a command line that composes them alone (no config folder, path or name of the user's,
    no search path, no hydra.mode, no installed plugin that adds configs) the first answer is
    known: unset, and Hydra goes on exactly as it would with it (RUN, or MULTIRUN with -m). Any
    other command line: Hydra's own question."""
    try:
        from hydra._internal.hydra import Hydra
    except ImportError:  # another Hydra: nothing to skip
        return
    from runner.trust import plugin_roots

    global _MODE_KNOWN
    _MODE_KNOWN = not any(a.startswith(CONFIG_FLAGS) or "hydra.mode" in a or "searchpath" in a
                          for a in argv) and not plugin_roots()
    ask = getattr(Hydra, "get_mode", None)
    if ask is None or getattr(ask, "runner_known", False):
        return

    def get_mode(self, config_name, overrides):
        return None if _MODE_KNOWN and config_name == "config" else ask(self, config_name, overrides)

    get_mode.runner_known = True
    Hydra.get_mode = get_mode


#: Hydra's command-line options that take a value (the next argument, unless given as --opt=value)
VALUED = {"--config-dir", "-cd", "--config-path", "-cp", "--config-name", "-cn", "--cfg", "-c", "--package", "-p",
          "--experimental-rerun"}
INFO = ("all", "config", "defaults", "defaults-tree", "plugins", "searchpath")  # --info's optional value


def options_first(argv: list[str]) -> list[str]:
    """Hydra's options (with their values) ahead of the overrides, in their order: Hydra's parser
    takes options after the overrides only at the very end (`-m model=coin --config-dir conf
    steps=10` was its usage text and "unrecognized arguments: steps=10", exit 2). An override never
    starts with "-" (key=value, +key=value, ~key), so nothing is taken for what it is not."""
    options, overrides, i = [], [], 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("-"):
            options.append(arg)
            takes = arg in VALUED or (arg in ("--info", "-i") and i + 1 < len(argv) and argv[i + 1] in INFO)
            if takes and i + 1 < len(argv):
                options.append(argv[i + 1])
                i += 1
        else:
            overrides.append(arg)
        i += 1
    return [*options, *overrides]


def _long_key() -> str | None:
    """An override key longer than any store or file system takes (Hydra would look for a config
    file of that name and fail with ENAMETOOLONG): named in one line instead."""
    for arg in sys.argv[1:]:
        key = arg.split("=", 1)[0].lstrip("+~") if "=" in arg and not arg.startswith("-") else ""
        if len(key) > 250:
            return (f"config key '{key[:40]}...' is {len(key)} characters long: keys are at most 250 "
                    "(a tracking store's limit for a param name)")
    return None


def main() -> None:
    from runner.lifecycle import pause_gc

    pause_gc()  # until the experiment is built (runner.app.start)
    sys.argv[1:] = options_first(sys.argv[1:])
    from runner.console import pipe_safe_stdout

    pipe_safe_stdout()  # `| head -1`: the rest of the output is dropped, the run goes on
    current_folder_importable()
    from runner.lifecycle import SIGNALS
    from runner.redact import mask_log_records, redact

    full = os.environ.get("HYDRA_FULL_ERROR") == "1"
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra re-raises; we report
    mask_log_records()  # Hydra logs each job's overrides, tracking.uri included
    SIGNALS.install()
    _completion_config_dir()
    from runner.extras import check_overrides

    if (problem := _long_key() or check_overrides(sys.argv[1:])) is not None:
        print(f"runner: error: {problem}", file=sys.stderr)
        raise SystemExit(2)
    from runner.tracking.worker import start_early

    start_early(sys.argv[1:], CONF_DIR)  # a background backend imports while this process imports Hydra and JAX
    import hydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    _compose_once(sys.argv[1:])
    from runner import timing

    timing.since("start", "startup")
    timing.mark("compose")
    try:
        hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")(_hydra_main)()
    except (HydraException, OmegaConfBaseException) as e:
        if full:
            raise
        line = redact(one_line(e))
        if SIGNALS.at_stop:  # a sweep's parent was opened (e.g. a launcher's settings refused): it ends FAILED
            SIGNALS.stopped(error=line[:500])
        print(f"runner: error: {line}", file=sys.stderr)
        raise SystemExit(2) from None
    except OSError as e:  # from Hydra's own set-up (the run's errors end in app.run): its output folder
        if not e.filename and SIGNALS.at_stop and not full:  # a launcher's (ConnectionError, ...)
            launcher_failed(e)
        if full or not e.filename:
            raise
        print(f"runner: error: cannot write {e.filename}: {e.strerror}: set hydra.run.dir (hydra.sweep.dir "
              "for -m) to a writable folder", file=sys.stderr)
        raise SystemExit(2) from None
    except BaseException as e:
        code = SIGNALS.exit_code(e)
        if code is None and SIGNALS.at_stop and isinstance(e, Exception) and not full:
            launcher_failed(e)
        if code is None:
            raise
        SIGNALS.stopped()
        if not SIGNALS.said:
            print("runner: interrupted" + (" (SIGTERM)" if code == 143 else ""), file=sys.stderr)
        raise SystemExit(code) from None


def launcher_failed(error: Exception) -> None:
    """A sweep's launcher (or sweeper) failed outside any job (its jobs' own failures are each
    job's, runner.job): the parent ends FAILED with the error, in one line, exit 1."""
    from runner.errors import describe
    from runner.lifecycle import SIGNALS
    from runner.redact import redact

    line = redact(describe(error))
    SIGNALS.stopped(error=f"the sweep's launcher failed: {line}"[:500])
    print(f"runner: error: the sweep's launcher failed: {line}; the sweep's parent run is FAILED", file=sys.stderr)
    raise SystemExit(1) from None


def cli() -> None:
    """`python -m runner` and the `runner` script: main(), then a quick exit. Once the runs are
    ended and atexit handlers have run, tearing down the interpreter's modules (JAX, MLflow,
    SQLAlchemy, ...) takes ~1.2 s per command and does nothing useful, so it is skipped. An
    unexpected exception still ends the usual way, with its traceback."""
    try:
        main()
        code = 0
    except SystemExit as e:
        code = e.code
    import atexit
    import threading

    if isinstance(code, str):  # SystemExit("message"): as Python does
        print(code, file=sys.stderr)
        code = 1
    threading._shutdown()  # as Python's own exit: thread pools' exit hooks, then join non-daemon threads
    atexit._run_exitfuncs()  # MLflow's, logging's, Ray's and joblib's shutdown handlers
    from runner import timing

    timing.since("exit", "exit")
    timing.report()  # timing=true
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code or 0)


if __name__ == "__main__":
    cli()
