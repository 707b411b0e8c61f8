"""A MariaDB server under the stack home with the row-based, full-image binlog CDC needs."""

from __future__ import annotations

import os
import shutil
import subprocess

import pymysql

from simpul.config import SimpulConfig
from simpul.stack.process import (
    DetachedProcess,
    ServiceStatus,
    StackError,
    check_port_free,
    require_binary,
    wait_until_ready,
)

_FIX = "run `make deps` (deploy/local/install-system-packages.sh) or `apt-get install -y mariadb-server`"
# /usr/sbin is not on every PATH (non-root shells), and that is where Debian puts mariadbd.
_SBIN = ("/usr/sbin", "/usr/local/sbin")
_MY_CNF = """\
# Written by `simpul stack up` on every start; edit simpul.yaml instead.
[client]
socket = {socket}

[mariadbd]
{user_line}datadir = {data}
socket = {socket}
pid-file = {run}/mariadbd.pid
tmpdir = {tmp}
port = {port}
bind-address = 127.0.0.1
skip-name-resolve
character-set-server = utf8mb4
collation-server = utf8mb4_unicode_ci
innodb_buffer_pool_size = 256M
local_infile = 1
# What binlog CDC needs: every row change with the full before/after image and column names.
server_id = 1
log_bin = {binlog}/mariadb-bin
binlog_format = ROW
binlog_row_image = FULL
binlog_row_metadata = FULL
gtid_strict_mode = ON
"""


class MariaDBServer:
    """``<home>/mariadb``: data, binlog, socket, config, log and pid file of one MariaDB server."""

    name = "mariadb"

    def __init__(self, config: SimpulConfig) -> None:
        self.config = config
        self.settings = config.stack.mariadb
        self.password = ""
        self.root = config.home / "mariadb"
        self.data = self.root / "data"
        self.run = self.root / "run"
        self.socket = self.run / "mariadb.sock"
        self.my_cnf = self.root / "my.cnf"
        self.log = self.root / "mariadb.log"
        self.process = DetachedProcess(self.name, self.root / "mariadb.pid", str(self.my_cnf))

    @property
    def address(self) -> str:
        """host:port clients connect to."""
        return f"127.0.0.1:{self.settings.port}"

    def preflight(self) -> None:
        """Raise a StackError if the binaries are missing or the port is busy."""
        if self.process.pid() is not None:
            return
        self._binaries()
        check_port_free(self.settings.port, "MariaDB", "stack.mariadb.port")

    def processes(self) -> list[DetachedProcess]:
        """The one tracked server process."""
        return [self.process]

    def start(self, password: str) -> list[ServiceStatus]:
        """Initialise (first time), start (unless running), wait until it answers, and create the
        Simpul user (with ``password``) and the configured databases."""
        self.password = password
        if self.process.pid() is None:
            mariadbd, install_db = self._binaries()
            self._write_config()
            if not (self.data / "mysql").is_dir():
                self._install_db(install_db)
            self.process.start([mariadbd, f"--defaults-file={self.my_cnf}"], self.log, cwd=self.root)
            wait_until_ready(self._answers, [self.process], "MariaDB", 60, [self.log])
        self._create_user_and_databases()
        return self.status()

    def status(self) -> list[ServiceStatus]:
        """Whether it runs, where, and where its data is."""
        pid = self.process.pid()
        return [ServiceStatus(self.name, pid is not None, pid, self.address, f"data {self.data}, log {self.log}")]

    def databases(self) -> list[str]:
        """The databases the config names: the MySQL-family sources."""
        return list(dict.fromkeys(s.database for s in self.config.sources if s.kind == "mysql"))

    def _binaries(self) -> tuple[str, str]:
        return (
            require_binary("mariadbd", "MariaDB server", _FIX, _SBIN),
            require_binary("mariadb-install-db", "MariaDB server", _FIX, _SBIN),
        )

    def _write_config(self) -> None:
        for folder in (self.data, self.run, self.root / "binlog", self.root / "tmp"):
            folder.mkdir(parents=True, exist_ok=True)
        # Only root reaches the socket, which is where the password-less root account logs in.
        self.run.chmod(0o700)
        self.my_cnf.write_text(
            _MY_CNF.format(
                # mariadbd refuses to run as root unless told so explicitly.
                user_line="user = root\n" if os.geteuid() == 0 else "",
                data=self.data,
                socket=self.socket,
                run=self.run,
                tmp=self.root / "tmp",
                port=self.settings.port,
                binlog=self.root / "binlog",
            ),
            encoding="utf-8",
        )

    def _install_db(self, install_db: str) -> None:
        result = subprocess.run(
            [
                install_db,
                f"--defaults-file={self.my_cnf}",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
            ],
            cwd=self.root,
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            shutil.rmtree(self.data, ignore_errors=True)
            raise StackError(f"mariadb-install-db failed:\n{result.stdout}{result.stderr}")

    def _root(self) -> pymysql.connections.Connection:
        return pymysql.connect(unix_socket=str(self.socket), user="root", connect_timeout=3, autocommit=True)

    def _answers(self) -> bool:
        try:
            self._root().close()
            return True
        except pymysql.err.OperationalError:
            return False

    def _create_user_and_databases(self) -> None:
        user = self.settings.user
        with self._root() as conn, conn.cursor() as cur:
            # Both hosts: TCP clients arrive as 127.0.0.1 (skip-name-resolve), socket clients as localhost.
            for host in ("127.0.0.1", "localhost"):
                cur.execute("CREATE USER IF NOT EXISTS %s@%s IDENTIFIED BY %s", (user, host, self.password))
                # Keeps the account in step with stack.env even if the file was regenerated.
                cur.execute("ALTER USER %s@%s IDENTIFIED BY %s", (user, host, self.password))
                # ALL PRIVILEGES on *.* includes REPLICATION SLAVE, REPLICATION CLIENT (BINLOG MONITOR).
                cur.execute("GRANT ALL PRIVILEGES ON *.* TO %s@%s WITH GRANT OPTION", (user, host))
            for name in self.databases():
                cur.execute(f"CREATE DATABASE IF NOT EXISTS `{name}` CHARACTER SET utf8mb4")
