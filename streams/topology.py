"""What the stream processors read and write, derived from the configuration: the agencies' CDC
topics, the mapping and trained model the resolver needs, and the topics it writes."""

from __future__ import annotations

from dataclasses import dataclass

from confluent_kafka.admin import NewTopic

from simpul.config import ConfigError, SimpulConfig
from simpul.kafka import client_config, create_topics
from simpul.streams.mapping import Mapping, MappingError, align_databases, load_mapping
from simpul.streams.matching import FellegiSunterModel


@dataclass(frozen=True)
class SourceTopic:
    """A CDC topic the router reads: which source table it carries and that table's key column."""

    topic: str
    source: str
    table: str
    key_column: str


def load_model(config: SimpulConfig) -> FellegiSunterModel:
    """The trained match settings the resolver scores with; a clear error when not trained yet."""
    path = config.estimates_path
    if not path.is_file():
        raise ConfigError(f"processors.estimates: {path} does not exist (train it with `simpul er train`)")
    try:
        return FellegiSunterModel.from_json(path.read_text(encoding="utf-8"))
    except (ValueError, KeyError) as exc:
        raise ConfigError(f"processors.estimates: {path} is not a trained model ({type(exc).__name__})") from None


def load_resolver_mapping(config: SimpulConfig) -> Mapping:
    """The configured agency mapping, its MySQL tables qualified by the configured databases."""
    try:
        return align_databases(load_mapping(config.mapping_path), config.mysql_databases)
    except MappingError as exc:
        raise ConfigError(f"processors.mapping: {exc}") from None


def source_topics(config: SimpulConfig, mapping: Mapping) -> list[SourceTopic]:
    """The CDC topics of every mapped or joined table whose source is configured."""
    sources = {s.name: s for s in config.sources}
    topics = []
    for source_name, table in mapping.read_tables():
        source = sources.get(source_name)
        if source is not None and table in source.tables:
            topics.append(SourceTopic(f"{source.topic_prefix}.{table}", source_name, table, mapping.key_column(source_name, table)))
    if not topics:
        raise ConfigError("processors: no mapped table belongs to a configured source (check sources[].tables and the mapping)")
    return topics


def feedback_scopes(config: SimpulConfig) -> dict[str, frozenset[str]]:
    """Source name to the golden fields its agency may hear back (every configured source has one)."""
    return {s.name: frozenset(s.feedback.fields) for s in config.sources}


def create_router_topics(config: SimpulConfig, inputs: list[SourceTopic]) -> None:
    """Create the topics the router reads and writes (the CDC topics, the changes and dead-letter
    topics), so nothing relies on broker auto-creation or on the connectors having started."""
    kafka = config.kafka
    create_topics(client_config(kafka), [NewTopic(t.topic, kafka.partitions, kafka.replication_factor) for t in inputs] + _shared_topics(config))


def create_resolver_topics(config: SimpulConfig) -> None:
    """Create the topics the resolver reads and writes: the changes and dead-letter topics and its
    compacted outputs (citizens, links, reviews, data quality, every source's feedback)."""
    kafka, p = config.kafka, config.processors
    compacted = {"cleanup.policy": "compact"}
    outputs = (p.citizens_topic, p.links_topic, p.reviews_topic, p.quality_topic, *(s.feedback_topic for s in config.sources))
    create_topics(
        client_config(kafka),
        _shared_topics(config) + [NewTopic(name, kafka.partitions, kafka.replication_factor, config=compacted) for name in outputs],
    )


def _shared_topics(config: SimpulConfig) -> list[NewTopic]:
    """The single-partition topics between the two roles: the router's row changes, and the dead letters both write."""
    kafka, p = config.kafka, config.processors
    return [NewTopic(p.changes_topic, 1, kafka.replication_factor), NewTopic(p.dlq_topic, 1, kafka.replication_factor)]
