"""Errors a connector reports to its operator as one clear line (no traceback)."""


class ConnectorError(RuntimeError):
    """A state the connector must not paper over, with what to do about it."""
