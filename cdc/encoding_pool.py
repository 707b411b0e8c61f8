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
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import TYPE_CHECKING, Any

from simpul.cdc.errors import ConnectorError
from simpul.cdc.row_encoding import DeadLetter
from simpul.failures import failure_site

if TYPE_CHECKING:  # worker processes import this module: no Kafka client in them
    from simpul.cdc.publisher import EventPublisher

log = logging.getLogger(__name__)

_PARENT_CHECK_S = 1.0
_STOP_WAIT_S = 5.0


@dataclass(frozen=True)
class _Failure:
    """What a worker reports instead of a result when a call raised."""

    site: str


@dataclass(frozen=True)
class _Ended:
    """What stands for the results of a worker that ended without sending them."""

    exitcode: int | None


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
        # Per worker: results taken from its pipe and not yet handed out, and calls whose result
        # is still to be taken from it.
        self._received: list[deque[Any]] = [deque() for _ in range(workers)]
        self._unreceived = [0] * workers
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
        self._unreceived[worker] += 1

    def ready(self) -> bool:
        """Whether the oldest outstanding call's result can be taken without waiting."""
        if not self._order:
            return False
        if self._inline is not None:
            return True
        self._receive_ready()
        return bool(self._received[self._order[0]])

    def next_result(self) -> Any:
        """The result of the oldest outstanding call, waiting for it if need be."""
        worker = self._order.popleft()
        if self._inline is not None:
            return self._inline_results.popleft()
        received = self._received[worker]
        while not received:
            self._receive_ready(_PARENT_CHECK_S)
            if not received and not self._processes[worker].is_alive():
                self._receive(worker)  # whatever it sent before it ended, else its end
        result = received.popleft()
        if isinstance(result, _Failure):
            raise ConnectorError(f"{self.name}: encoding worker {worker} failed on {result.site}")
        if isinstance(result, _Ended):
            raise ConnectorError(f"{self.name}: encoding worker {worker} ended (exit code {result.exitcode})")
        return result

    def _receive_ready(self, timeout: float = 0.0) -> None:
        """Take every result already sent by any worker (waiting up to ``timeout`` for one).

        Results are taken as they come, not only the oldest call's: a worker whose result waits in
        a full pipe stops working, and while the connector waits for another worker's result it
        would otherwise leave the others blocked, so that the workers took turns instead of
        working at once (``bench.cdc_mysql``: each worker busy ~40% during the snapshot).
        """
        waiting = [self._results[w] for w in range(self.workers) if self._unreceived[w]]
        if not waiting:
            return
        for connection in wait(waiting, timeout):
            self._receive(self._results.index(connection))  # type: ignore[arg-type]

    def _receive(self, worker: int) -> None:
        try:
            result = self._results[worker].recv()
        except EOFError:
            result = _Ended(self._processes[worker].exitcode)
        self._received[worker].append(result)
        self._unreceived[worker] -= 1

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
        self._received = [deque() for _ in range(self.workers)]
        self._unreceived = [0] * self.workers


def _serve(factory: Callable[..., Any], args: tuple[Any, ...], inbox: Any, results: Connection, parent: int) -> None:
    """A worker process: run calls from ``inbox`` until told to stop or the parent is gone.

    Results go out from a thread of their own: a result fills the pipe until the connector reads
    it, and the connector is often busy reading the source or producing meanwhile; the worker
    goes on with its next call instead of waiting (``bench.cdc_mysql``'s snapshot: each worker
    was busy less than half the time, and the connector waited for results 40% of its time).
    The connector bounds the calls outstanding, so the results waiting here are bounded too.
    """
    # Ctrl-C reaches the whole process group; the connector stops its workers itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_when_orphaned, args=(parent,), name="parent-check", daemon=True).start()
    outbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
    sender = threading.Thread(target=_send_results, args=(outbox, results), name="results", daemon=True)
    sender.start()
    try:
        worker = factory(*args)
        while True:
            call = inbox.get()
            if call is None:
                return
            method, call_args, reply = call
            result = getattr(worker, method)(*call_args)
            if reply:
                outbox.put(result)
    except Exception as exc:  # noqa: BLE001 - reported to the connector, which stops and restarts
        outbox.put(_Failure(failure_site(exc)))
    finally:
        outbox.put(_END_OF_RESULTS)
        sender.join(_STOP_WAIT_S)


_END_OF_RESULTS = object()


def _exit_when_orphaned(parent: int) -> None:
    """End the worker once the connector's process is gone, wherever the worker is: a call the
    connector was sending when it died stays half-read forever (the worker holds its inbox's
    writing end too, so the read never sees an end of file)."""
    while os.getppid() == parent:
        time.sleep(_PARENT_CHECK_S)
    os._exit(0)


def _send_results(outbox: queue.SimpleQueue[Any], results: Connection) -> None:
    """Send a worker's results to the connector in order, until the worker ends (or the connector does)."""
    try:
        while (result := outbox.get()) is not _END_OF_RESULTS:
            results.send(result)
    except OSError:  # the connector is gone: the worker ends at its next check
        return


class PooledPublishing:
    """Rows collected into batches for an :class:`EncodingPool`, published in submission order
    with the checkpoints that fall among them.

    A connector :meth:`add`\\ s rows and :meth:`checkpoint`\\ s positions in log order and
    :meth:`send`\\ s the batch when it is due (a full batch goes at once); the batch becomes one
    call ``batch_method(rows)``. Other calls (a snapshot's reads) are :meth:`submit`\\ ted as
    they are. A call returns one outcome per input row: a list whose items are encoded events
    ``(topic, key, value, table, op, commit_ms)``, :class:`DeadLetter`\\ s, or anything else,
    which goes to ``on_other`` (a connector's data-quality notes). A batch's checkpoints are marked
    after all its rows are published, so the publisher confirms a position only once everything
    before it (and the rest of its batch) is acknowledged.
    """

    def __init__(
        self, pool: EncodingPool, publisher: EventPublisher, batch_method: str, batch_rows: int, max_outstanding: int = 4,
        on_other: Callable[[Any], None] | None = None,
    ) -> None:
        self.pool = pool
        self.publisher = publisher
        self.batch_method = batch_method
        self.batch_rows = batch_rows
        self.max_outstanding = max_outstanding * pool.workers
        self.on_other = on_other
        # Per call in submission order: whether the pool has a result for it, and its checkpoints.
        self._submitted: deque[tuple[bool, list[Any]]] = deque()
        # The batch being collected: its rows, its checkpoints, and when its first row came (monotonic).
        self._rows: list[Any] = []
        self._weight = 0
        self._checkpoints: list[Any] = []
        self._opened = 0.0

    @property
    def idle(self) -> bool:
        """Nothing collected or submitted waits to be published."""
        return not (self._submitted or self._rows or self._checkpoints)

    @property
    def collected(self) -> tuple[int, int]:
        """(rows, checkpoints) collected for the next batch."""
        return len(self._rows), len(self._checkpoints)

    def waited(self, now: float) -> float:
        """How long (seconds, to monotonic ``now``) the batch's first row has waited; 0 without rows."""
        return now - self._opened if self._rows else 0.0

    def add(self, row: Any, weight: int = 1) -> None:
        """Collect one row for the next batch, counting as ``weight`` rows of ``batch_rows`` (an item
        that stands for several rows weighs more); a full batch is sent (and what is ready published)."""
        if not self._rows:
            self._opened = time.monotonic()
        self._rows.append(row)
        self._weight += weight
        if self._weight >= self.batch_rows:
            self.send()
            self.publish_ready()

    def checkpoint(self, position: Any) -> None:
        """Every row collected so far is at or before ``position`` (a source transaction ended)."""
        self._checkpoints.append(position)

    def send(self) -> None:
        """Hand the collected rows to the pool, the checkpoints among them (checkpoints alone
        are marked once everything submitted before is published)."""
        if self._rows:
            self.submit(self._checkpoints, self.batch_method, self._rows)
        elif self._checkpoints:
            self._submitted.append((False, self._checkpoints))
        self._rows, self._checkpoints, self._weight = [], [], 0

    def submit(self, checkpoints: list[Any], method: str, *args: Any) -> None:
        """Call ``method(*args)`` on the pool; its outcomes and ``checkpoints`` publish in turn.
        Waits (publishing) while too many calls are outstanding: memory stays bounded."""
        self.pool.submit(method, *args)
        self._submitted.append((True, checkpoints))
        while self.pool.outstanding > self.max_outstanding:
            self._publish_next()

    def publish_ready(self, wait: bool = False) -> None:
        """Publish every submitted call whose result is in (``wait``: every one, waiting for them)."""
        while self._submitted and (wait or not self._submitted[0][0] or self.pool.ready()):
            self._publish_next()

    def _publish_next(self) -> None:
        submitted, checkpoints = self._submitted.popleft()
        outcomes: list[list[Any]] = self.pool.next_result() if submitted else []
        publisher = self.publisher
        # The call's events go to the publisher together (one call into librdkafka per topic),
        # and its checkpoints are marked after all of them: a position is confirmed no earlier than
        # before, and at most one call's events later (streamed transactions are often one row).
        events: list[Any] = []
        for outcome in outcomes:
            for item in outcome:
                if type(item) is tuple:
                    events.append(item)
                elif isinstance(item, DeadLetter):
                    log.warning("%s: a row of %s set aside (%s) at %s", self.pool.name, item.table, item.reason, item.position)
                    publisher.dead_letter(item)
                elif self.on_other is not None:
                    self.on_other(item)
        publisher.publish_many(events)
        for position in checkpoints:
            publisher.checkpoint(position)
