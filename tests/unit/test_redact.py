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


def test_log_records_are_masked(caplog):
    mask_log_records()
    with caplog.at_level(logging.INFO):
        logging.getLogger("hydra.test").info("#0 : %s", "tracking.uri=http://a:secret@h:1")
        logging.getLogger("hydra.test").info("#1 : tracking.uri=http://a:secret@h:1")
    assert "secret" not in caplog.text and caplog.text.count("a:***@h") == 2
