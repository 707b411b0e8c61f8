"""A PostgreSQL cluster under the stack home, set up for logical decoding (CDC) and durability."""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import psycopg
from psycopg import sql

from simpul.config import SimpulConfig
from simpul.stack.process import (
    DetachedProcess,
    ServiceStatus,
    StackError,
    check_port_free,
    run_as,
    wait_until_ready,
)

_FIX = "run `make deps` (deploy/local/install-system-packages.sh) or `apt-get install -y postgresql`"
# fsync and synchronous_commit stay on: the tests kill -9 the server and expect committed rows back.
_SETTINGS = """\
# Written by `simpul stack up` on every start; edit simpul.yaml instead.
listen_addresses = '127.0.0.1'
port = {port}
unix_socket_directories = '{socket_dir}'
unix_socket_permissions = 0700
wal_level = logical
max_replication_slots = 32
max_wal_senders = 32
shared_buffers = 256MB
fsync = on
synchronous_commit = on
password_encryption = 'scram-sha-256'
"""
_HBA = """\
# Written by `simpul stack up`: password (scram) logins only, loopback only.
local   all          all                 scram-sha-256
host    all          all   127.0.0.1/32  scram-sha-256
host    replication  all   127.0.0.1/32  scram-sha-256
"""


class PostgresServer:
    """``<home>/postgres``: data, socket dir, log and pid file of one PostgreSQL cluster."""

    name = "postgres"

    def __init__(self, config: SimpulConfig) -> None:
        self.config = config
        self.settings = config.stack.postgres
        self.password = ""
        self.root = config.home / "postgres"
        self.data = self.root / "data"
        self.socket_dir = self.root / "run"
        self.log = self.root / "postgres.log"
        self.process = DetachedProcess(self.name, self.root / "postgres.pid", str(self.data), signal.SIGINT)
        # root may not run PostgreSQL; the distribution's `postgres` account does instead.
        self.user = "postgres" if os.geteuid() == 0 else None

    @property
    def address(self) -> str:
        """host:port clients connect to."""
        return f"127.0.0.1:{self.settings.port}"

    def preflight(self) -> None:
        """Raise a StackError if the binaries, the service account or the port are missing or busy."""
        if self.process.pid() is not None:
            return
        self._bindir()
        if self.user is not None:
            try:
                pwd.getpwnam(self.user)
            except KeyError:
                raise StackError(f"PostgreSQL: the system user `{self.user}` does not exist. Fix: {_FIX}") from None
        check_port_free(self.settings.port, "PostgreSQL", "stack.postgres.port")

    def processes(self) -> list[DetachedProcess]:
        """The one tracked server process."""
        return [self.process]

    def start(self, password: str) -> list[ServiceStatus]:
        """Initialise (first time, with ``password`` for the superuser), start (unless running),
        wait until it accepts logins, and create the configured databases."""
        self.password = password
        if self.process.pid() is None:
            bindir = self._bindir()
            if not (self.data / "PG_VERSION").is_file():
                self._initdb(bindir)
            self._write_config()
            self.process.start(
                [str(bindir / "postgres"), "-D", str(self.data)],
                self.log,
                cwd=self.data,
                user=self.user,
            )
            wait_until_ready(self._accepts_logins, [self.process], "PostgreSQL", 60, [self.log])
        self._create_databases()
        return self.status()

    def status(self) -> list[ServiceStatus]:
        """Whether it runs, where, and where its data is."""
        pid = self.process.pid()
        return [ServiceStatus(self.name, pid is not None, pid, self.address, f"data {self.data}, log {self.log}")]

    def databases(self) -> list[str]:
        """The databases the config names: PostgreSQL sources plus the master index."""
        names = [s.database for s in self.config.sources if s.kind == "postgres"]
        names.append(self.config.sinks.master_index.database)
        return list(dict.fromkeys(names))

    def _bindir(self) -> Path:
        """The newest installed server binaries (Debian keeps them off PATH)."""
        found = shutil.which("postgres") or shutil.which("initdb")
        candidates = [Path(found).parent] if found else []
        versions = sorted(
            Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(re.sub(r"\D", "", p.parent.name) or 0)
        )
        candidates += reversed(versions)
        for bindir in candidates:
            if (bindir / "postgres").is_file() and (bindir / "initdb").is_file():
                self._check_data_version(bindir)
                return bindir
        raise StackError(f"PostgreSQL server binaries (postgres, initdb) are missing. Fix: {_FIX}")

    def _check_data_version(self, bindir: Path) -> None:
        version_file = self.data / "PG_VERSION"
        if not version_file.is_file():
            return
        made_by = version_file.read_text().strip()
        if bindir.parent.name != made_by and bindir.parent.parent.name == "postgresql":
            raise StackError(
                f"PostgreSQL: {self.data} was made by PostgreSQL {made_by} but the binaries are "
                f"{bindir.parent.name}. Fix: install PostgreSQL {made_by}, or `simpul stack down` and "
                f"remove {self.root} to start with empty databases."
            )

    def _initdb(self, bindir: Path) -> None:
        # The service account must be able to walk from / to its data directory.
        for parent in reversed(self.data.parents):
            if self.user is not None and parent.exists() and not os.stat(parent).st_mode & 0o001:
                if self.config.home in (parent, *parent.parents):
                    parent.chmod(parent.stat().st_mode | 0o011)
                else:
                    raise StackError(
                        f"PostgreSQL runs as `{self.user}`, which cannot enter {parent}. "
                        f"Fix: `chmod o+x {parent}` or set `stack.home` in simpul.yaml to a folder it can reach."
                    )
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o711)
        self.data.mkdir(mode=0o700, exist_ok=True)
        self.socket_dir.mkdir(mode=0o700, exist_ok=True)
        self._own(self.data, self.socket_dir)
        # initdb reads the superuser's password from a file; it exists only while initdb runs.
        with tempfile.NamedTemporaryFile("w", dir=self.root, prefix=".pw-", delete=True) as pwfile:
            pwfile.write(self.password + "\n")
            pwfile.flush()
            self._own(Path(pwfile.name))
            result = subprocess.run(
                [
                    str(bindir / "initdb"),
                    "-D", str(self.data),
                    "-U", self.settings.user,
                    f"--pwfile={pwfile.name}",
                    "--auth=scram-sha-256",
                    "--encoding=UTF8",
                    "--locale=C.UTF-8",
                ],
                cwd=self.root,
                capture_output=True,
                text=True,
                **run_as(self.user),
            )
        if result.returncode != 0:
            shutil.rmtree(self.data, ignore_errors=True)
            raise StackError(f"PostgreSQL initdb failed:\n{result.stdout}{result.stderr}")
        with open(self.data / "postgresql.conf", "a", encoding="utf-8") as conf:
            conf.write("\n# Simpul's settings (rewritten on every `simpul stack up`)\ninclude 'simpul.conf'\n")

    def _write_config(self) -> None:
        (self.data / "simpul.conf").write_text(
            _SETTINGS.format(port=self.settings.port, socket_dir=self.socket_dir), encoding="utf-8"
        )
        (self.data / "pg_hba.conf").write_text(_HBA, encoding="utf-8")
        self._own(self.data / "simpul.conf", self.data / "pg_hba.conf")

    def _own(self, *paths: Path) -> None:
        if self.user is not None:
            account = pwd.getpwnam(self.user)
            for path in paths:
                os.chown(path, account.pw_uid, account.pw_gid)

    def _connect(self, dbname: str = "postgres") -> psycopg.Connection:
        return psycopg.connect(
            host="127.0.0.1",
            port=self.settings.port,
            user=self.settings.user,
            password=self.password,
            dbname=dbname,
            connect_timeout=3,
            autocommit=True,
        )

    def _accepts_logins(self) -> bool:
        try:
            with self._connect():
                return True
        except psycopg.OperationalError as exc:
            if "password authentication failed" in str(exc):
                raise StackError(
                    f"PostgreSQL in {self.data} rejects the password in {self.config.home / 'stack.env'} "
                    f"(was stack.env replaced?). Fix: restore that file, or `simpul stack down` and remove "
                    f"{self.root} to start with empty databases."
                ) from None
            return False

    def _create_databases(self) -> None:
        with self._connect() as conn:
            existing = {row[0] for row in conn.execute("SELECT datname FROM pg_database")}
            for name in self.databases():
                if name not in existing:
                    conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))

