"""The one configuration of Simpul: ``simpul.yaml``, validated into typed models.

The file is found by ``--config``, else ``$SIMPUL_CONFIG``, else ``./simpul.yaml``. Any value can be
overridden from the environment as ``SIMPUL_<SECTION>__<KEY>`` (for example
``SIMPUL_KAFKA__BOOTSTRAP_SERVERS``). Secrets never live in the file: a source names the
environment variable that holds its connection string (``dsn_env``), and the value is read only
when a command needs it.

Every problem is reported as one :class:`ConfigError` whose message names the key and what is
wrong, so the command line can print it without a traceback.
"""

from __future__ import annotations

import os
import re
import zlib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

DEFAULT_CONFIG_FILE = "simpul.yaml"
CONFIG_ENV = "SIMPUL_CONFIG"

_ENV_NAME = r"^[A-Z_][A-Z0-9_]*$"
_IDENTIFIER = r"^[a-z][a-z0-9_]*$"
_SECRET_WORDS = ("dsn", "password", "secret", "key", "token")


class ConfigError(Exception):
    """A configuration problem, with a message that names the key and what is wrong."""


def listed_twice(values: list[str]) -> list[str]:
    """The values that occur more than once, sorted."""
    return sorted({value for value in values if values.count(value) > 1})


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- the local stack (only used by `simpul stack` and the tests) -------------------------------


class LocalKafka(_Section):
    """Kafka started from Maven Central jars. Node ``i`` (1-based) listens on ``port + i - 1``."""

    version: str = "4.1.1"
    nodes: int = Field(1, ge=1, le=5)
    port: int = Field(19092, ge=1024, le=65000)
    controller_port: int = Field(19192, ge=1024, le=65000)
    heap_mb: int = Field(512, ge=128, le=8192)


class LocalPostgres(_Section):
    """A PostgreSQL cluster with ``wal_level=logical`` holding the PostgreSQL agency databases."""

    port: int = Field(15432, ge=1024, le=65535)
    user: str = Field("simpul", pattern=_IDENTIFIER)
    password_env: str = Field("SIMPUL_PG_PASSWORD", pattern=_ENV_NAME)


class LocalMariaDB(_Section):
    """A MariaDB server with a row-based, full-image binlog holding the MySQL-family agency databases."""

    port: int = Field(13306, ge=1024, le=65535)
    user: str = Field("simpul", pattern=_IDENTIFIER)
    password_env: str = Field("SIMPUL_MARIADB_PASSWORD", pattern=_ENV_NAME)


class LocalPrometheus(_Section):
    """A Prometheus server scraping every component's metrics port and evaluating Simpul's alert rules."""

    port: int = Field(19090, ge=1024, le=65535, description="Loopback port of Prometheus's web UI and API.")
    scrape_interval_s: float = Field(5, gt=0, le=300, description="How often targets are scraped and rules evaluated.")


class StackSettings(_Section):
    """Where and on which loopback ports the local stack runs."""

    home: Path = Path(".simpul")
    kafka: LocalKafka = LocalKafka()
    postgres: LocalPostgres = LocalPostgres()
    mariadb: LocalMariaDB = LocalMariaDB()
    prometheus: LocalPrometheus = LocalPrometheus()


# --- the pipeline --------------------------------------------------------------------------------


class KafkaSettings(_Section):
    """The Kafka cluster Simpul reads from and writes to."""

    bootstrap_servers: str = "127.0.0.1:19092"
    partitions: int = Field(8, ge=1, le=1024)
    replication_factor: int = Field(1, ge=1, le=7)
    client: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description="Extra librdkafka properties for every client."
    )

    @field_validator("bootstrap_servers")
    @classmethod
    def _host_port_list(cls, value: str) -> str:
        for server in value.split(","):
            host, _, port = server.strip().rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"expected host:port[,host:port...], got {server.strip()!r}")
        return value


class SchemaRegistrySettings(_Section):
    """A Confluent-compatible schema registry (Simpul's own in the local stack)."""

    url: str = Field("http://127.0.0.1:18081", pattern=r"^https?://[^/\s]+(/.*)?$")
    topic: str = Field("_schemas", pattern=r"^[a-zA-Z0-9._\-]+$", description="Storage topic of Simpul's own registry.")


class ColumnRule(_Section):
    """What a connector does with one column before it leaves the agency (Debezium's
    ``column.exclude.list``, ``column.mask.with.<n>.chars``, ``column.mask.hash...``)."""

    column: str = Field(pattern=r"^[a-zA-Z_][a-zA-Z0-9_]*\.[a-zA-Z_][a-zA-Z0-9_]*\.[a-zA-Z_][a-zA-Z0-9_]*$")
    action: Literal["exclude", "mask", "hash"]
    mask_chars: int = Field(8, ge=1, le=64, description="For mask: the value becomes this many '*'.")
    secret_env: str | None = Field(None, pattern=_ENV_NAME, description="For hash: the variable holding the HMAC key.")

    @model_validator(mode="after")
    def _hash_needs_secret(self) -> "ColumnRule":
        if self.action == "hash" and not self.secret_env:
            raise ValueError(f"{self.column}: action hash needs secret_env (the variable holding the HMAC key)")
        return self


class CaptureSettings(_Section):
    """How a source's connector captures: slot, snapshot, heartbeats, column rules."""

    slot: str | None = Field(None, pattern=r"^[a-z0-9_]{1,63}$", description="PostgreSQL slot (default simpul_<source>).")
    publication: str | None = Field(None, pattern=r"^[a-z0-9_]{1,63}$", description="PostgreSQL publication (default simpul_<source>).")
    snapshot_mode: Literal["initial", "no_data", "always", "when_needed", "initial_only"] = "initial"
    heartbeat_interval_ms: int = Field(10_000, ge=100, le=3_600_000)
    server_id: int | None = Field(None, ge=1, le=4_294_967_295, description="MySQL replica server id (default derived from the name).")
    max_batch_events: int = Field(10_000, ge=1, le=1_000_000)
    workers: int = Field(
        1, ge=1, le=16,
        description="Processes that convert and encode rows (PostgreSQL: decode too). 1 does it in the connector's "
        "own process; more spread a busy source over cores (order and positions are kept).",
    )
    columns: list[ColumnRule] = Field(default_factory=list)


FeedbackField = Literal[
    "nik", "name", "titles", "birth_date", "birth_place", "sex", "street", "rt", "rw", "kelurahan", "kecamatan", "kk", "phone",
]


class FeedbackSettings(_Section):
    """What an agency hears back for each of its records (purpose limitation: only what it may see).

    Every record gets its master id and life status; ``fields`` adds the verified golden fields
    this agency is allowed to see. ``write_back`` and ``table`` are for the sink that writes the
    feedback into the agency's own database.
    """

    fields: list[FeedbackField] = Field(default_factory=list, description="Golden fields the agency may see.")
    topic: str | None = Field(None, pattern=r"^[a-zA-Z0-9._\-]+$", description="Feedback topic (default simpul.feedback.<source>).")
    write_back: bool = Field(False, description="Write the feedback into a table of the agency database.")
    table: str = Field("simpul_citizen_ref", pattern=_IDENTIFIER, description="The write-back table.")

    @field_validator("fields")
    @classmethod
    def _each_field_once(cls, fields: list[str]) -> list[str]:
        twice = listed_twice(fields)
        if twice:
            raise ValueError(f"listed twice: {', '.join(twice)}")
        return fields


class SourceSettings(_Section):
    """One agency database captured by a CDC connector."""

    name: str = Field(pattern=_IDENTIFIER)
    agency: str = Field(description="The agency (OPD) that owns the database, e.g. Disdukcapil.")
    kind: Literal["postgres", "mysql"]
    dsn_env: str = Field(pattern=_ENV_NAME, description="Environment variable holding the connection string.")
    database: str = Field(pattern=_IDENTIFIER)
    topic_prefix: str = Field(pattern=r"^[a-zA-Z0-9_\-]+$")
    tables: list[str] = Field(min_length=1)
    capture: CaptureSettings = CaptureSettings()
    feedback: FeedbackSettings = FeedbackSettings()

    @property
    def offset_key(self) -> str:
        """Where the connector's offsets are kept: the logical server name (topic prefix), as Debezium keys them."""
        return self.topic_prefix

    @property
    def slot_name(self) -> str:
        """The replication slot of this source's PostgreSQL connector."""
        return self.capture.slot or f"simpul_{self.name}"

    @property
    def publication_name(self) -> str:
        """The publication of this source's PostgreSQL connector."""
        return self.capture.publication or f"simpul_{self.name}"

    @property
    def server_id(self) -> int:
        """The server id this source's MySQL connector replicates as (stable per name)."""
        return self.capture.server_id or 5400 + zlib.crc32(self.name.encode()) % 100_000

    @property
    def feedback_topic(self) -> str:
        """The compacted topic of what this agency hears back, keyed by its record ids."""
        return self.feedback.topic or f"simpul.feedback.{self.name}"

    @field_validator("tables")
    @classmethod
    def _qualified(cls, tables: list[str]) -> list[str]:
        for table in tables:
            if not re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*\.[a-zA-Z_][a-zA-Z0-9_]*", table):
                raise ValueError(f"{table!r} is not <schema>.<table> (PostgreSQL) or <database>.<table> (MySQL)")
        if len(set(tables)) != len(tables):
            raise ValueError("a table is listed twice")
        return tables

    @model_validator(mode="after")
    def _rules_name_captured_tables(self) -> "SourceSettings":
        for rule in self.capture.columns:
            table = rule.column.rsplit(".", 1)[0]
            if table not in self.tables:
                raise ValueError(f"capture.columns: {rule.column!r} is not a column of a captured table ({', '.join(self.tables)})")
        return self

    def dsn(self) -> str:
        """The connection string, read from the environment variable this source names."""
        return require_env(self.dsn_env, f"sources.{self.name}.dsn_env")


class ProcessorSettings(_Section):
    """The stream processors (Faust application): where they read, keep state and write."""

    app_id: str = Field("simpul-resolver", pattern=r"^[a-zA-Z0-9_\-]+$")
    store: str = Field("rocksdb://", pattern=r"^(rocksdb|memory)://")
    estimates: Path | None = Field(None, description="Match settings with estimates from `simpul er train` (default <home>/er/estimates.json).")
    mapping: Path | None = Field(None, description="Agency mapping YAML (default: the shipped Kota Serang one).")
    changes_topic: str = Field("simpul.er.changes", pattern=r"^[a-zA-Z0-9._\-]+$")
    citizens_topic: str = Field("simpul.citizens", pattern=r"^[a-zA-Z0-9._\-]+$")
    links_topic: str = Field("simpul.citizen-links", pattern=r"^[a-zA-Z0-9._\-]+$")
    reviews_topic: str = Field("simpul.review-items", pattern=r"^[a-zA-Z0-9._\-]+$")
    quality_topic: str = Field("simpul.data-quality", pattern=r"^[a-zA-Z0-9._\-]+$")
    dlq_topic: str = Field("simpul.er.dlq", pattern=r"^[a-zA-Z0-9._\-]+$")
    session_timeout_s: float = Field(10.0, ge=1.0, le=300.0, description="How soon a killed worker's partitions move on.")
    rocksdb_cache_mb: int = Field(64, ge=8, le=8192, description="Block cache per table store (Faust's default is 2 GiB).")
    batch_size: int = Field(500, ge=1, le=100_000, description="Most CDC events the router reads at once and row changes it sends as one message; the resolver writes its state and outputs once per message.")
    batch_ms: int = Field(50, ge=1, le=10_000, description="How long the router waits to fill a batch; the latency it may add.")
    state_cache_entries: int = Field(100_000, ge=0, le=100_000_000, description="Entries per resolver table kept decoded in memory.")
    resolver_nice: int = Field(
        0, ge=-20, le=19,
        description="The resolver process's nice value (below 0 needs root or CAP_SYS_NICE): on a server it shares, "
        "the one stage that cannot be spread over processes gets the CPU first.",
    )
    master_id_key_env: str = Field("SIMPUL_MASTER_ID_KEY", pattern=_ENV_NAME, description="Variable holding the secret key of master ids (never change it).")

    def master_id_key(self) -> bytes:
        """The master ids' hash key, read from the environment (blake2b takes at most 64 bytes)."""
        key = require_env(self.master_id_key_env, "processors.master_id_key_env").encode()
        if len(key) > 64:
            raise ConfigError(f"processors.master_id_key_env: the key in {self.master_id_key_env} is longer than 64 bytes")
        return key


class MasterIndexSettings(_Section):
    """The master citizen index database."""

    dsn_env: str = Field("SIMPUL_MASTER_DSN", pattern=_ENV_NAME)
    database: str = Field("simpul_master", pattern=_IDENTIFIER)

    def dsn(self) -> str:
        """The connection string, read from the environment variable this sink names."""
        return require_env(self.dsn_env, "sinks.master_index.dsn_env")


class SinkSettings(_Section):
    """Where the results go, and how the sinks batch."""

    master_index: MasterIndexSettings = MasterIndexSettings()
    batch_size: int = Field(5000, ge=1, le=100_000, description="Messages per database transaction, at most.")
    consumer_prefix: str = Field("simpul-sink", pattern=r"^[a-zA-Z0-9_\-]+$", description="Consumer group (and offsets) name prefix.")


class ApiClient(_Section):
    """An agency allowed to call the lookup API: its key (from the environment) and field scope."""

    agency: str = Field(pattern=_IDENTIFIER)
    key_env: str = Field(pattern=_ENV_NAME, description="Environment variable holding this agency's API key.")
    fields: list[FeedbackField] = Field(default_factory=list, description="Golden fields this agency may read (master id and life status always).")


class ApiSettings(_Section):
    """The lookup API over the master index."""

    host: str = "127.0.0.1"
    port: int = Field(18088, ge=1024, le=65535)
    clients: list[ApiClient] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_agencies(self) -> "ApiSettings":
        names = [client.agency for client in self.clients]
        twice = listed_twice(names)
        if twice:
            raise ValueError(f"clients: the agency {twice[0]!r} is listed twice")
        return self


class MetricsSettings(_Section):
    """Every component serves Prometheus metrics on ``host:port + offset`` (see ``simpul.metrics``)."""

    host: str = "127.0.0.1"
    port: int = Field(9400, ge=1024, le=65000)


class SeedSettings(_Section):
    """Defaults of the synthetic Kota Serang used by ``simpul seed`` and ``make run``."""

    seed: int = 20250601
    citizens: int = Field(768_377, ge=10)
    demo_citizens: int = Field(20_000, ge=10)


class SimpulConfig(BaseSettings):
    """The whole of ``simpul.yaml``."""

    model_config = SettingsConfigDict(
        env_prefix="SIMPUL_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    stack: StackSettings = StackSettings()
    kafka: KafkaSettings = KafkaSettings()
    schema_registry: SchemaRegistrySettings = SchemaRegistrySettings()
    sources: list[SourceSettings] = Field(default_factory=list)
    processors: ProcessorSettings = ProcessorSettings()
    sinks: SinkSettings = SinkSettings()
    api: ApiSettings = ApiSettings()
    metrics: MetricsSettings = MetricsSettings()
    seed: SeedSettings = SeedSettings()
    base_dir: Path = Field(Path("."), exclude=True, description="Folder of the config file; relative paths start here.")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The file's values arrive as init kwargs; the environment overrides them.
        return (env_settings, init_settings)

    @model_validator(mode="after")
    def _unique_sources(self) -> "SimpulConfig":
        names = [source.name for source in self.sources]
        duplicated = listed_twice(names)
        if duplicated:
            raise ValueError(f"sources: the name {duplicated[0]!r} is used twice")
        return self

    def source(self, name: str) -> SourceSettings:
        """The source called ``name``, or a :class:`ConfigError` listing the known ones."""
        for source in self.sources:
            if source.name == name:
                return source
        known = ", ".join(s.name for s in self.sources) or "none"
        raise ConfigError(f"sources: no source named {name!r} (configured: {known})")

    def path(self, value: Path) -> Path:
        """A path from the config, resolved against the config file's folder."""
        return value if value.is_absolute() else (self.base_dir / value).resolve()

    @property
    def home(self) -> Path:
        """The one folder that holds the local stack's data, logs and generated secrets."""
        return self.path(self.stack.home)

    @property
    def estimates_path(self) -> Path:
        """Where the resolver's trained match settings live."""
        explicit = self.processors.estimates
        return self.path(explicit) if explicit is not None else self.home / "er" / "estimates.json"

    @property
    def mysql_databases(self) -> dict[str, str]:
        """Source name to database of the MySQL sources (whose tables the database qualifies)."""
        return {s.name: s.database for s in self.sources if s.kind == "mysql"}

    @property
    def mapping_path(self) -> Path | None:
        """The configured agency mapping, or None for the shipped one."""
        return self.path(self.processors.mapping) if self.processors.mapping is not None else None


def require_env(name: str, key: str) -> str:
    """The value of environment variable ``name``; a :class:`ConfigError` naming ``key`` if unset."""
    value = os.environ.get(name)
    if not value:
        raise ConfigError(f"{key}: environment variable {name} is not set (it must hold the secret, not the file)")
    return value


def load_env_file(path: Path) -> dict[str, str]:
    """Export ``KEY=VALUE`` lines of ``path`` (the local stack's generated secrets) into the
    environment, without overriding anything already set there. Returns what the file held."""
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for line in path.read_text(encoding="utf-8").splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.lstrip().startswith("#"):
            values[key.strip()] = value.strip()
    for key, value in values.items():
        os.environ.setdefault(key, value)
    return values


def write_config(config: SimpulConfig, path: Path) -> Path:
    """Write ``config`` as a self-contained ``simpul.yaml`` (absolute home) for a child process.

    Secrets stay out: the file names the environment variables, as the original does.
    """
    effective = config.model_dump(mode="json", exclude={"base_dir"})
    effective["stack"]["home"] = str(config.home)
    effective["processors"]["estimates"] = str(config.estimates_path)
    if config.mapping_path is not None:
        effective["processors"]["mapping"] = str(config.mapping_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(effective, sort_keys=False), encoding="utf-8")
    return path


def config_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    """Which config file to read: the flag, else ``$SIMPUL_CONFIG``, else ``./simpul.yaml``."""
    return Path(explicit or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG_FILE)


def load_config(explicit: str | os.PathLike[str] | None = None) -> SimpulConfig:
    """Read and validate the config file; raise :class:`ConfigError` with one clear message."""
    path = config_path(explicit)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found (pass --config or set {CONFIG_ENV})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}:{where} not valid YAML: {getattr(exc, 'problem', exc)}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top, got {type(raw).__name__}")
    return parse_config(raw, base_dir=path.resolve().parent, origin=str(path))


def parse_config(raw: dict[str, Any], base_dir: Path = Path("."), origin: str = "config") -> SimpulConfig:
    """Validate an already-parsed mapping (what ``simpul.yaml`` holds)."""
    try:
        return SimpulConfig(**raw, base_dir=base_dir)
    except ValidationError as exc:
        raise ConfigError(f"{origin}: {describe_validation_error(exc, raw)}") from None


def describe_validation_error(exc: ValidationError, raw: dict[str, Any]) -> str:
    """The first error as ``key.path: what is wrong``, with source names instead of list indexes."""
    problems = []
    for error in exc.errors():
        key = _dotted(error["loc"], raw)
        if error["type"] == "extra_forbidden":
            problems.append(f"{key}: unknown key")
        elif error["type"] == "missing":
            problems.append(f"{key}: required key is missing")
        else:
            message = error["msg"].removeprefix("Value error, ")
            value = error.get("input")
            # A secret typed where a variable name belongs must not reach the terminal or a log.
            secretive = any(word in key.lower() for word in _SECRET_WORDS)
            plain = isinstance(value, (str, int, float)) and not isinstance(value, bool)
            shown = f" (got {value!r})" if plain and not secretive else ""
            problems.append(f"{key}: {message}{shown}")
    more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
    return problems[0] + more


def _dotted(loc: tuple[Any, ...], raw: Any) -> str:
    parts: list[str] = []
    node = raw
    for part in loc:
        if isinstance(part, int) and isinstance(node, list) and part < len(node):
            item = node[part]
            name = item.get("name") if isinstance(item, dict) else None
            parts.append(str(name) if name else f"[{part}]")
            node = item
        else:
            parts.append(str(part))
            node = node.get(part) if isinstance(node, dict) else None
    return ".".join(parts) or "(top level)"
