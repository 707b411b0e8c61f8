"""Simpul's own Confluent-compatible schema registry, stored in a compacted Kafka topic.

Any Confluent-compatible registry can replace it in production: clients only speak the REST API.
"""

from simpul.schemas.registry.server import DEFAULT_TOPIC, RegistryServer, RegistrySettings, run_registry

__all__ = ["DEFAULT_TOPIC", "RegistryServer", "RegistrySettings", "run_registry"]
