"""The local stack: Kafka (KRaft, from Maven Central jars), PostgreSQL, MariaDB, the schema
registry and Prometheus run as plain processes under the stack home, on loopback ports from
``simpul.yaml``."""

from simpul.stack.local import SERVICES, LocalStack
from simpul.stack.process import ServiceStatus, StackError

__all__ = ["SERVICES", "LocalStack", "ServiceStatus", "StackError"]
