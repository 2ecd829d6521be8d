"""Credentials stay out of everything runner writes or prints: the password of a URI
(`scheme://user:password@host`, e.g. a PostgreSQL or an authenticated MLflow tracking URI) is
replaced by `***` in params, tags, config files (runner's and Hydra's), log lines, the console
and error messages. Only the tracking client itself sees the real URI."""
from __future__ import annotations

import logging
import re
from pathlib import Path

# scheme://user:password@ , also as Hydra escapes it in its logs and files (http\://alice\:pw@)
SECRET = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*\\?://[^:/@\s'\"\\]*)(?P<sep>\\?:)(?P<password>[^@/\s'\"]+)@")
MASK = "***"


def redact(text):
    """`text` with every URI password masked (anything that is not a string is returned as is)."""
    if not isinstance(text, str) or "@" not in text:
        return text
    return SECRET.sub(lambda m: f"{m['head']}{m['sep']}{MASK}@", text)


def redact_file(path: Path) -> None:
    """Rewrite a text file (Hydra's .hydra/*.yaml, its log) with its passwords masked."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError):
        return
    masked = redact(text)
    if masked != text:
        path.write_text(masked)


def redact_folder(folder: Path) -> None:
    """Hydra's own files in a run or sweep directory: .hydra/*.yaml, multirun.yaml, *.log."""
    folder = Path(folder)
    for path in [*folder.glob(".hydra/*.yaml"), *folder.glob("*.yaml"), *folder.glob("*.log")]:
        redact_file(path)


def mask_log_records() -> None:
    """Every log record's message and arguments masked as it is made (Hydra logs each sweep
    job's overrides, tracking.uri included, to the console and its log files)."""
    make = logging.getLogRecordFactory()
    if getattr(make, "runner_redacts", False):
        return

    def factory(*args, **kwargs):
        record = make(*args, **kwargs)
        record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) for a in record.args)
        return record

    factory.runner_redacts = True
    logging.setLogRecordFactory(factory)


class RedactingStream:
    """A text stream that masks passwords in what is written to it (the tracking worker's stdout
    and stderr: MLflow prints "View run ... at: <tracking URI>" itself)."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text):
        return self._stream.write(redact(text))

    def __getattr__(self, name):
        return getattr(self._stream, name)
