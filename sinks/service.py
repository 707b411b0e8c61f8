"""The sink processes: ``simpul sink run master-index`` and ``simpul sink run writeback``."""

from __future__ import annotations

import logging
import threading

from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

from simpul.config import ConfigError, SimpulConfig
from simpul.metrics import metrics_port, serve_metrics
from simpul.schemas.wire import ConfluentAvroDecoder, WireFormatError
from simpul.shutdown import Shutdown
from simpul.sinks.master_index import MasterIndexSink
from simpul.sinks.runner import SinkRunner
from simpul.sinks.writeback import AgencyWriteBack

log = logging.getLogger(__name__)

SINKS = ("master-index", "writeback")


def registry_decoder(config: SimpulConfig) -> ConfluentAvroDecoder:
    """A decoder that reads each message with the schema it was written with (by registry id).

    An id the registry does not know makes the message unreadable (a dead letter); any other
    registry error (it is restarting) propagates, so the batch is retried rather than set aside.
    """
    client = SchemaRegistryClient({"url": config.schema_registry.url})

    def schema_text(schema_id: int) -> str:
        try:
            return client.get_schema(schema_id).schema_str
        except SchemaRegistryError as exc:
            if exc.http_status_code == 404:
                raise WireFormatError(f"schema id {schema_id} is not in the registry") from None
            raise

    return ConfluentAvroDecoder(schema_text)


def run_sink(config: SimpulConfig, which: str, shutdown: Shutdown) -> None:
    """Run one sink until ``shutdown``: the master index, or the write-back to every agency that asks for it."""
    if which not in SINKS:
        raise ConfigError(f"sink: unknown sink {which!r} (one of {', '.join(SINKS)})")
    decoder = registry_decoder(config)
    prefix, batch = config.sinks.consumer_prefix, config.sinks.batch_size
    if which == "master-index":
        serve_metrics(config.metrics.host, metrics_port(config, "sink"))
        target = MasterIndexSink(config, decoder)
        SinkRunner(config, f"{prefix}-master-index", target.topics, target, batch).run(shutdown)
        return
    serve_metrics(config.metrics.host, metrics_port(config, "writeback"))
    sources = [s for s in config.sources if s.feedback.write_back]
    if not sources:
        raise ConfigError("sink writeback: no source has feedback.write_back: true")
    runners = [
        SinkRunner(config, f"{prefix}-writeback-{source.name}", [source.feedback_topic], AgencyWriteBack(source, decoder), batch)
        for source in sources
    ]
    threads = [threading.Thread(target=runner.run, args=(shutdown,), name=f"writeback-{s.name}") for runner, s in zip(runners, sources)]
    for thread in threads:
        thread.start()
    log.info("writing back to %s", ", ".join(s.name for s in sources))
    for thread in threads:
        thread.join()
