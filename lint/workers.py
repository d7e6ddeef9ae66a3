"""Isolated worker processes: one file can never take down or stall the whole run.

libcst's native parser can crash the interpreter on pathological input and is slow on
some; each file is parsed in a worker process with a time limit. A worker that dies or
overruns is killed and replaced, and that file alone is reported as an error.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import sys
import time
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any, Callable, Iterable, Iterator


@dataclass
class Crash:
    """A task whose worker died or ran out of time."""

    reason: str


def _context():
    # fork is cheapest and inherits the already imported libcst; elsewhere, spawn.
    if sys.platform == "linux":
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


def _serve(conn: Connection, function: Callable[..., Any]) -> None:
    # Deep but valid trees (hundreds of chained operators) need more than the default 1000
    # frames; if the C stack runs out instead, the crash stays inside this worker.
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 12000))
    # A parse allocates millions of nodes that die together by reference counting; cyclic
    # collections during it cost up to half the time on large files (measured 11.6 s vs
    # 6.6 s for libcst on 50,000 lines). Collect between files, never inside one, and never
    # scan the imported modules inherited from the parent.
    gc.freeze()
    while True:
        try:
            task = conn.recv()
        except EOFError:
            return
        if task is None:
            return
        key, args = task
        gc.disable()
        try:
            result = function(*args)
        except Exception as exc:  # a bug in a rule must not lose the other files
            result = Crash(f"internal error: {type(exc).__name__}: {exc}")
        finally:
            gc.enable()
        conn.send((key, result))


class _Worker:
    def __init__(self, function: Callable[..., Any]) -> None:
        parent, child = _context().Pipe()
        self.process = _context().Process(target=_serve, args=(child, function), daemon=True)
        self.process.start()
        child.close()
        self.conn = parent
        self.task: tuple[Any, float] | None = None  # (key, deadline)

    def stop(self, kill: bool = False) -> None:
        if kill:
            self.process.kill()
        else:
            try:
                self.conn.send(None)
            except OSError:
                pass
        self.process.join(timeout=5)
        self.conn.close()


def run_isolated(
    function: Callable[..., Any],
    tasks: Iterable[tuple[Any, tuple, float]],
    jobs: int | None = None,
) -> Iterator[tuple[Any, Any]]:
    """Yield ``(key, function(*args))`` or ``(key, Crash)`` for each ``(key, args, time_limit)``.

    ``function`` must be importable by name (a module-level function) where ``spawn`` is used.
    """
    pending = deque(tasks)
    if not pending:
        return
    jobs = max(1, min(jobs or os.cpu_count() or 1, len(pending)))
    workers = [_Worker(function) for _ in range(jobs)]
    limits: dict[Any, float] = {}
    try:
        while pending or any(w.task for w in workers):
            for worker in workers:
                if worker.task is None and pending:
                    key, args, limit = pending.popleft()
                    limits[key] = limit
                    worker.conn.send((key, args))
                    worker.task = (key, time.monotonic() + limit)
            busy = [w for w in workers if w.task]
            now = time.monotonic()
            timeout = max(0.0, min(w.task[1] for w in busy) - now)
            ready = wait([w.conn for w in busy] + [w.process.sentinel for w in busy], timeout=timeout)
            for i, worker in enumerate(workers):
                if worker.task is None:
                    continue
                key, deadline = worker.task
                if worker.conn in ready:
                    try:
                        done_key, result = worker.conn.recv()
                    except (EOFError, OSError):
                        done_key, result = key, None
                    if result is not None:
                        worker.task = None
                        yield done_key, result
                        continue
                if worker.process.sentinel in ready or not worker.process.is_alive():
                    worker.process.join(timeout=5)  # reap it: exitcode is None until then
                    code = worker.process.exitcode
                    reason = f"the parser crashed (signal {-code})" if code and code < 0 else f"the parser process exited ({code})"
                    worker.stop(kill=True)
                    workers[i] = _Worker(function)
                    yield key, Crash(reason)
                elif time.monotonic() >= deadline:
                    worker.stop(kill=True)
                    workers[i] = _Worker(function)
                    yield key, Crash(f"gave up after {limits[key]:.0f} s")
    finally:
        for worker in workers:
            worker.stop(kill=worker.task is not None)
