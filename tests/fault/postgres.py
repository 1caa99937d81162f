"""A throwaway PostgreSQL primary and its streaming replica, in a test's own directory.

Each server listens on a free port of 127.0.0.1 with trust authentication (replication
included: initdb's defaults), fsync off, and every statement in its log file, so a test can
read which server ran what. PostgreSQL refuses to run as root: when the tests do, the servers
run as the ``postgres`` OS user (the directory is handed to it). The shared server on 5432 is
never touched.
"""

import os
import pwd
import shutil
import subprocess
import tempfile
from contextlib import suppress
from pathlib import Path

from tests.fault.stack import free_port

SEARCH = ("/usr/lib/postgresql/*/bin",)


def bindir() -> Path | None:
    """The directory of PostgreSQL's server binaries (initdb, pg_ctl, pg_basebackup), newest
    version first; ``PG_BINDIR`` overrides."""
    if os.environ.get("PG_BINDIR"):
        return Path(os.environ["PG_BINDIR"])
    candidates = sorted(
        (p for pattern in SEARCH for p in Path("/").glob(pattern.lstrip("/"))),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    for path in candidates:
        if all((path / tool).exists() for tool in ("initdb", "pg_ctl", "pg_basebackup")):
            return path
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def _as_server_user() -> list[str]:
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


class Directory:
    """A temporary directory the servers may write (owned by ``postgres`` under root)."""

    def __init__(self) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="abacus-pg-"))
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.path, user.pw_uid, user.pw_gid)

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


class Server:
    """One PostgreSQL server: its data directory, port and statement log."""

    def __init__(self, root: Path, name: str, bin_dir: Path) -> None:
        self.root, self.name, self.bin = root, name, bin_dir
        self.data = root / name
        self.log = root / f"{name}.log"
        self.port = free_port()

    def _run(self, *args: str) -> None:
        result = subprocess.run(
            [*_as_server_user(), *args], capture_output=True, text=True, check=False
        )
        if result.returncode:
            raise AssertionError(f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")

    def url(self, database: str = "postgres") -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}"

    def init(self) -> "Server":
        self._run(
            str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust",
            "--no-sync", "-E", "UTF8", "--locale=C.UTF-8",
        )  # fmt: skip
        return self

    def start(self) -> "Server":
        options = [
            f"-p {self.port}",
            f"-k {self.root}",
            "-c listen_addresses=127.0.0.1",
            "-c fsync=off",
            "-c full_page_writes=off",
            "-c log_statement=all",
            "-c log_min_messages=warning",
        ]
        self._run(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w",
            "-t", "60", "-o", " ".join(options), "start",
        )  # fmt: skip
        return self

    def stop(self) -> None:
        with suppress(AssertionError):
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop")

    def replica(self, name: str) -> "Server":
        """A streaming replica of this server, started: a base backup with ``-R`` (standby.signal
        and primary_conninfo), WAL streamed during the copy."""
        standby = Server(self.root, name, self.bin)
        self._run(
            str(self.bin / "pg_basebackup"), "-h", "127.0.0.1", "-p", str(self.port),
            "-U", "postgres", "-D", str(standby.data), "-R", "-X", "stream", "-c", "fast",
            "--no-sync",
        )  # fmt: skip
        return standby.start()

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""
