"""Avro schemas and the Confluent-compatible schema-registry plumbing."""
