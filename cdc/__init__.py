"""Change-data capture: agency database logs (PostgreSQL pgoutput, MariaDB binlog) into Kafka."""
