"""Simpul: an event-driven integration backbone for municipal databases."""

__version__ = "0.1.0"
