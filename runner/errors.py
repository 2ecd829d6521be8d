"""Errors a user can cause. The CLI prints them as one line and exits 2."""


class ConfigError(Exception):
    """A configuration or input problem found before (or instead of) a fit."""


#: set by runner.__main__'s SIGINT / SIGTERM handlers: the exit code (130 / 143) once a signal came.
#: An interruption can surface as any exception (JAX may wrap it); this says what it really was.
INTERRUPTED: dict = {"code": None}
