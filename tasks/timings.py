"""Per-operation timings for benchmarks: with PGS_TIMINGS=FILE, each operation's
start and end (wall clock, all hosts) is appended to FILE as a JSON line."""

from __future__ import annotations

import json
import os
import time

from pyinfra import state
from pyinfra.api.state import BaseStateCallback

from tasks.common import once


class OperationTimer(BaseStateCallback):
    def __init__(self, path: str):
        self.path = path
        self.started: dict[str, float] = {}

    def operation_start(self, state, op_hash):
        self.started[op_hash] = time.time()

    def operation_end(self, state, op_hash):
        record = {"name": ", ".join(state.get_op_meta(op_hash).names), "start": self.started.pop(op_hash, None), "end": time.time()}
        with open(self.path, "a") as handle:
            handle.write(json.dumps(record) + "\n")


@once
def time_operations_if_asked() -> None:
    path = os.environ.get("PGS_TIMINGS")
    if path:
        with open(path, "a") as handle:
            handle.write(json.dumps({"name": "(operations collected)", "start": None, "end": time.time()}) + "\n")
        state.add_callback_handler(OperationTimer(path))
