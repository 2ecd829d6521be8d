"""runner/redact.py: a URI's password is masked wherever it appears, as typed or as Hydra escapes it."""
import logging

import pytest

from runner.redact import mask_log_records, redact


@pytest.mark.parametrize("text, masked", [
    ("postgresql+psycopg2://alice:hunter2@host/db", "postgresql+psycopg2://alice:***@host/db"),
    ("tracking.uri=http://alice:p%40ss@127.0.0.1:5055 seed=1", "tracking.uri=http://alice:***@127.0.0.1:5055 seed=1"),
    (r"+tracking.uri=http\://alice\:hunter2@127.0.0.1\:5", r"+tracking.uri=http\://alice\:***@127.0.0.1\:5"),
    ("mlflow ui --backend-store-uri https://u:v@h", "mlflow ui --backend-store-uri https://u:***@h"),
    ("sqlite:///mlflow.db", "sqlite:///mlflow.db"),  # nothing to hide
    ("http://bob@host:80", "http://bob@host:80"),  # a user without a password
    ("mail me: a@b.c", "mail me: a@b.c"),
])
def test_redact(text, masked):
    assert redact(text) == masked


@pytest.fixture
def record_factory():
    """The logging record factory as it was before the test, put back after it (mask_log_records
    installs its own for the whole process, as the command and the tracking worker want)."""
    before = logging.getLogRecordFactory()
    yield before
    logging.setLogRecordFactory(before)


def test_log_records_are_masked(caplog, record_factory):
    mask_log_records()
    masking = logging.getLogRecordFactory()
    assert masking is not record_factory
    mask_log_records()  # once per process: a second call wraps nothing more
    assert logging.getLogRecordFactory() is masking
    with caplog.at_level(logging.INFO):
        logging.getLogger("hydra.test").info("#0 : %s", "tracking.uri=http://a:secret@h:1")
        logging.getLogger("hydra.test").info("#1 : tracking.uri=http://a:secret@h:1")
    assert "secret" not in caplog.text and caplog.text.count("a:***@h") == 2
