"""The PostgreSQL connector: logical decoding with the built-in pgoutput plugin."""
