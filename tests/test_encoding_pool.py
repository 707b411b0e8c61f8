"""The connectors' encoding pool: results in submission order, broadcasts before later calls,
failures surfaced as connector errors, no process left behind (real worker processes, no servers)."""

from __future__ import annotations

import os
import signal
import time

import pytest

from conftest import wait_gone
from simpul.cdc.encoding_pool import EncodingPool, PooledPublishing
from simpul.cdc.errors import ConnectorError


class Tagger:
    """A worker object: tags numbers with the current tag, which a broadcast changes."""

    def __init__(self, tag: str) -> None:
        self.tag = tag

    def retag(self, tag: str) -> None:
        self.tag = tag

    def tagged(self, numbers: list[int], delay_s: float = 0.0) -> list[tuple[str, int, int]]:
        time.sleep(delay_s)
        return [(self.tag, n, os.getpid()) for n in numbers]

    def fail(self) -> None:
        raise ValueError("a value that must not reach the log: 3673010101900001")

    def die(self) -> None:
        os.kill(os.getpid(), signal.SIGKILL)


@pytest.mark.parametrize("workers", [1, 3])
def test_results_come_back_in_submission_order_and_broadcasts_take_effect_in_order(workers: int) -> None:
    pool = EncodingPool("test", Tagger, ("a",), workers)
    try:
        # Early calls sleep longest: a later worker finishes first, and must still wait its turn.
        for n in range(6):
            pool.submit("tagged", [n], 0.05 * (5 - n) if workers > 1 else 0.0)
        pool.broadcast("retag", "b")
        for n in range(6, 9):
            pool.submit("tagged", [n])
        assert pool.outstanding == 9
        results = [pool.next_result()[0] for _ in range(9)]
    finally:
        pool.close()
    assert [n for _, n, _ in results] == list(range(9))
    assert [tag for tag, _, _ in results] == ["a"] * 6 + ["b"] * 3
    pids = {pid for _, _, pid in results}
    assert (pids == {os.getpid()}) if workers == 1 else (len(pids) == workers and os.getpid() not in pids)


def test_a_failing_call_becomes_a_connector_error_without_the_values() -> None:
    pool = EncodingPool("test", Tagger, ("a",), 2)
    try:
        pool.submit("fail")
        with pytest.raises(ConnectorError) as caught:
            pool.next_result()
    finally:
        pool.close()
    assert "ValueError at" in str(caught.value) and "3673010101900001" not in str(caught.value)


def test_a_worker_killed_mid_call_becomes_a_connector_error_and_close_leaves_no_process() -> None:
    pool = EncodingPool("test", Tagger, ("a",), 2)
    pids = [process.pid for process in pool._processes]
    try:
        pool.submit("die")
        with pytest.raises(ConnectorError, match="encoding worker 0 ended"):
            pool.next_result()
    finally:
        pool.close()
    wait_gone(pids, 5)


def test_ready_says_whether_the_oldest_result_can_be_taken_without_waiting() -> None:
    pool = EncodingPool("test", Tagger, ("a",), 2)
    try:
        assert not pool.ready()
        pool.submit("tagged", [1], 0.5)
        assert not pool.ready()
        deadline = time.monotonic() + 10
        while not pool.ready():
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert pool.next_result()[0][1] == 1
    finally:
        pool.close()


class Echo:
    """A worker object whose outcome for each row is one encoded event naming the row."""

    def encode(self, rows: list[str]) -> list[list[tuple[str, bytes, bytes, str, str, None]]]:
        return [[("t", row.encode(), row.encode(), "table", "c", None)] for row in rows]


class Recorder:
    """Stands in for the publisher: what was published and checkpointed, in order."""

    def __init__(self) -> None:
        self.log: list[tuple[str, object]] = []

    def publish_many(self, events: list[tuple[str, bytes, bytes, str, str, None]]) -> None:
        self.log.extend(("event", key.decode()) for _, key, _, _, _, _ in events)

    def checkpoint(self, position: object) -> None:
        self.log.append(("checkpoint", position))


def test_collected_rows_go_as_batches_with_their_checkpoints_after_them() -> None:
    pool = EncodingPool("test", Echo, (), 1)
    recorder = Recorder()
    output = PooledPublishing(pool, recorder, "encode", batch_rows=3)  # type: ignore[arg-type]
    output.checkpoint("p0")
    output.add("a")
    output.checkpoint("p1")
    assert output.collected == (1, 2) and output.waited(time.monotonic() + 1) >= 1 and not output.idle
    output.send()
    output.checkpoint("p2")  # no rows of its own: marked after everything before
    output.send()
    for row in "bcd":  # the third row fills the batch, which goes at once
        output.add(row)
    assert output.collected == (0, 0) and output.waited(time.monotonic()) == 0.0
    output.add("e")
    output.add("f", weight=2)  # an item standing for two rows fills the batch too
    assert output.collected == (0, 0)
    output.publish_ready(wait=True)
    assert output.idle
    # A batch's checkpoints follow all of its events (confirmed no earlier than they may be).
    assert recorder.log == [("event", "a"), ("checkpoint", "p0"), ("checkpoint", "p1"), ("checkpoint", "p2"),
                            ("event", "b"), ("event", "c"), ("event", "d"), ("event", "e"), ("event", "f")]
    pool.close()
