"""The lookup API over the master citizen index (installed as ``simpul.api``).

Agencies read golden records, lineage and history over HTTP, each with its own API key and field
scope (``api.clients``); every read is written to ``mpi.api_audit``. ``server.run_api`` serves it.
"""
