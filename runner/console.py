"""What the command-line entry points share (runner, runner-predict): Hydra's errors as one line,
and the user's current folder importable. No runner imports: any entry point may use it."""
import os
import sys


def current_folder_importable() -> None:
    """`runner` and `runner-predict` (console scripts) import a user's `model.fn` from the current
    folder, as `python -m runner` does (it puts the folder first on sys.path)."""
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())


def _renamed() -> dict:
    """conf/renamed.yaml: group/old option -> its new name."""
    from pathlib import Path

    from omegaconf import OmegaConf

    path = Path(__file__).resolve().parent / "conf" / "renamed.yaml"
    return dict(OmegaConf.to_container(OmegaConf.load(path))) if path.is_file() else {}


def one_line(e: BaseException) -> str:
    """Hydra's multi-line messages as one line that names the problem and the fix."""
    from hydra.errors import MissingConfigException

    if isinstance(e, MissingConfigException) and e.missing_cfg_file and "/" in e.missing_cfg_file:
        group, name = e.missing_cfg_file.rsplit("/", 1)
        options = ", ".join(e.options or [])
        renamed = _renamed().get(e.missing_cfg_file)
        if renamed:
            return f"{group}={name} is called {group}={renamed} now (choose one of {options})"
        return f"unknown {group} '{name}': choose one of {options}"
    from hydra.errors import InstantiationException, OverrideParseException

    from runner.errors import ConfigError

    if isinstance(e, InstantiationException) and isinstance(e.__cause__, ConfigError):  # a plugin's settings
        return str(e.__cause__)
    text = str(e).strip()
    if isinstance(e, OverrideParseException) and e.override:
        return f"cannot read the override {e.override!r}: {text.splitlines()[0]}"
    if "Could not override" in text or "is not in struct" in text:
        key = text.split("'")[1] if "'" in text else text
        if key.startswith("data."):
            return (f"unknown key '{key}' for this data choice: name the data format first, "
                    f"data=json|csv|npz|file {key}=... (the model's default data takes no {key.split('.', 1)[1]})")
        return f"unknown key '{key}': check the spelling (python -m runner --cfg job lists the keys), or use +{key}=... to add a new one"
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith(("full_key", "object_type", "See https"))]
    return "; ".join(lines) or type(e).__name__


class PipeSafe:
    """The command's stdout when its reader may stop reading (`python -m runner ... | head -1`):
    a write or flush to a closed pipe sends the rest to /dev/null instead of raising
    BrokenPipeError (a traceback after the run was recorded, or a sweep's next jobs never run)."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text):
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._gone()
            return len(text)

    def flush(self):
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._gone()

    def _gone(self) -> None:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, self._stream.fileno())
        finally:
            os.close(devnull)

    def __getattr__(self, name):
        return getattr(self._stream, name)


def pipe_safe_stdout() -> None:
    if not isinstance(sys.stdout, PipeSafe) and sys.stdout is not None:
        sys.stdout = PipeSafe(sys.stdout)
