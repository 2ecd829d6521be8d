"""runner/tracking/worker.py, in-process: what the tracking worker sends back to the command always
loads there. (The worker as a process: tests/e2e/test_store.py.)"""


class TwoArgError(Exception):
    def __init__(self, what, where):
        super().__init__(f"{what} at {where}")


def test_every_worker_reply_loads_in_the_command():
    """An answer the command could not unpickle would stop its receiver and hang the command:
    such an exception comes back as a RuntimeError naming it; a plain one comes back as itself."""
    import pickle

    from runner.tracking import TrackingError
    from runner.tracking.worker import _reply

    state = {"run_id": "r", "experiment_id": "1", "reaped": []}
    req, ok, err, back = pickle.loads(_reply(7, False, TwoArgError("bad", "store"), state))
    assert (req, ok, back) == (7, False, state)
    assert type(err) is RuntimeError and str(err) == "TwoArgError: bad at store"
    _, ok, err, _ = pickle.loads(_reply(8, False, TrackingError("one line"), state))
    assert not ok and type(err) is TrackingError and str(err) == "one line"
    assert pickle.loads(_reply(9, True, ("run", True), state)) == (9, True, ("run", True), state)
    _, ok, err, _ = pickle.loads(_reply(10, True, [TwoArgError("odd", "value")], state))  # a value too
    assert not ok and type(err) is RuntimeError and str(err).startswith("TypeError: ")
