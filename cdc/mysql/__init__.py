"""The MySQL/MariaDB connector: a consistent snapshot, then the row-based binlog."""
