"""Sinks: the master citizen index and the feedback to agencies."""
