"""A connector's decoding and encoding, spread over worker processes in order: :class:`EncodingPool`.

A connector reads its source on one connection, in log order, and must produce in that order. The
CPU-heavy part between the two (decoding rows, converting them, encoding Avro) is pure, so it
can run on other cores: the pool gives each worker process its own copy of a worker object,
sends every *broadcast* (a table's new description) to all copies in log order, hands submitted
batches to the workers in turn, and returns their results in submission order. With one worker
the object lives in the connector's process and calls run at once: no process, no copying.

A worker process ends when the pool closes, when the connector's process is gone (checked every
second, so ``kill -9`` of the connector leaves no orphan), or on a failure, which the connector
receives as a :class:`ConnectorError` when it next takes that worker's result: it stops and
restarts from its confirmed position, as after any crash.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import signal
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from simpul.cdc.errors import ConnectorError
from simpul.failures import failure_site

log = logging.getLogger(__name__)

_PARENT_CHECK_S = 1.0
_STOP_WAIT_S = 5.0


@dataclass(frozen=True)
class _Failure:
    """What a worker reports instead of a result when a call raised."""

    site: str


class EncodingPool:
    """Calls methods of worker objects made by ``factory(*args)``, results in submission order."""

    def __init__(self, name: str, factory: Callable[..., Any], args: tuple[Any, ...], workers: int) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self.name = name
        self.workers = workers
        self._order: deque[int] = deque()  # the worker of each call whose result is not taken yet
        self._turn = 0
        self._inline: Any = None
        self._inline_results: deque[Any] = deque()
        self._processes: list[multiprocessing.process.BaseProcess] = []
        self._inboxes: list[Any] = []
        self._results: list[Connection] = []
        if workers == 1:
            self._inline = factory(*args)
            return
        # spawn, not fork: the connector holds Kafka clients, database connections and threads.
        context = multiprocessing.get_context("spawn")
        for index in range(workers):
            inbox = context.Queue()
            # A result pipe's sending end lives only in its worker, so a dead worker reads as EOF.
            receiving, sending = context.Pipe(duplex=False)
            process = context.Process(
                target=_serve, args=(factory, args, inbox, sending, os.getpid()), name=f"{name}-encoder-{index}", daemon=True
            )
            process.start()
            sending.close()
            # The connector's exit must not wait for calls a dead worker will never read.
            inbox.cancel_join_thread()
            self._processes.append(process)
            self._inboxes.append(inbox)
            self._results.append(receiving)
        log.info("%s: encoding on %d worker processes", name, workers)

    @property
    def outstanding(self) -> int:
        """Calls submitted whose result is not taken yet."""
        return len(self._order)

    def broadcast(self, method: str, *args: Any) -> None:
        """Call ``method`` on every worker object, after everything submitted before (no result)."""
        if self._inline is not None:
            getattr(self._inline, method)(*args)
            return
        for inbox in self._inboxes:
            inbox.put((method, args, False))

    def submit(self, method: str, *args: Any) -> None:
        """Call ``method`` on the next worker in turn; take its result with :meth:`next_result`."""
        if self._inline is not None:
            self._inline_results.append(getattr(self._inline, method)(*args))
            self._order.append(0)
            return
        worker = self._turn
        self._turn = (self._turn + 1) % self.workers
        self._inboxes[worker].put((method, args, True))
        self._order.append(worker)

    def ready(self) -> bool:
        """Whether the oldest outstanding call's result can be taken without waiting."""
        if not self._order:
            return False
        if self._inline is not None:
            return True
        return self._results[self._order[0]].poll(0)

    def next_result(self) -> Any:
        """The result of the oldest outstanding call, waiting for it if need be."""
        worker = self._order.popleft()
        if self._inline is not None:
            return self._inline_results.popleft()
        results = self._results[worker]
        while not results.poll(_PARENT_CHECK_S):
            if not self._processes[worker].is_alive():
                break
        try:
            result = results.recv()
        except EOFError:
            code = self._processes[worker].exitcode
            raise ConnectorError(f"{self.name}: encoding worker {worker} ended (exit code {code})") from None
        if isinstance(result, _Failure):
            raise ConnectorError(f"{self.name}: encoding worker {worker} failed on {result.site}")
        return result

    def close(self) -> None:
        """Stop the worker processes (waiting a little for each, then killing it)."""
        for inbox in self._inboxes:
            try:
                inbox.put(None)
            except (OSError, ValueError):
                pass
        for process in self._processes:
            process.join(_STOP_WAIT_S)
            if process.is_alive():
                process.kill()
                process.join(_STOP_WAIT_S)
        for results in self._results:
            results.close()
        for inbox in self._inboxes:
            inbox.close()
        self._processes, self._inboxes, self._results = [], [], []
        self._order.clear()


def _serve(factory: Callable[..., Any], args: tuple[Any, ...], inbox: Any, results: Connection, parent: int) -> None:
    """A worker process: run calls from ``inbox`` until told to stop or the parent is gone."""
    # Ctrl-C reaches the whole process group; the connector stops its workers itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        worker = factory(*args)
        while True:
            try:
                call = inbox.get(timeout=_PARENT_CHECK_S)
            except queue.Empty:
                if os.getppid() != parent:
                    return
                continue
            if call is None:
                return
            method, call_args, reply = call
            result = getattr(worker, method)(*call_args)
            if reply:
                results.send(result)
    except Exception as exc:  # noqa: BLE001 - reported to the connector, which stops and restarts
        results.send(_Failure(failure_site(exc)))
