"""``tuner dashboard``: serve optuna-dashboard over the storage a study file (or URL) names.

The storage is resolved exactly as ``tuner tune`` resolves it (see
:func:`tuner.storage.resolve_storage_url`): ``--storage``, then ``$OPTUNA_STORAGE``, then the
study file's ``[study] storage``, then ``tuner.db`` next to the study file. A storage file that
is missing or empty is an error: the dashboard never creates an empty database.

The server binds 127.0.0.1 unless told otherwise: optuna-dashboard has no authentication and
its API can rename and delete studies.
"""

from __future__ import annotations

import ipaddress
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from wsgiref.handlers import SimpleHandler
from wsgiref.simple_server import ServerHandler, WSGIRequestHandler, WSGIServer, make_server

import optuna

from tuner.errors import StorageError, TunerError
from tuner.storage import check_storage_exists, make_storage, redact_url, resolve_storage_url

__all__ = [
    "DashboardError",
    "dashboard_storage_url",
    "dashboard_url",
    "exposed_warning",
    "is_loopback",
    "open_server",
    "serve",
]


class DashboardError(TunerError):
    """The dashboard cannot listen on the requested address (port in use, bad host)."""


def dashboard_storage_url(study_file: str | None, storage: str | None) -> str:
    """The storage URL to serve, resolved exactly as ``tune`` resolves it.

    Args:
        study_file: a study file (its storage), or None.
        storage: ``--storage``: an Optuna URL or a bare file path (relative to the current
            directory), or None.

    Raises:
        StorageError: a storage file that does not exist or is empty, or an in-memory storage
            (never creates one).
        ConfigError: the study file is invalid.
    """
    cfg = None
    if study_file is not None:
        from tuner.config import load_study_config

        cfg = load_study_config(study_file)
    url = resolve_storage_url(cfg, storage)
    if url in ("sqlite://", "sqlite:///:memory:"):
        raise StorageError(f"storage {url} is in memory: it holds no study to show.")
    check_storage_exists(url)
    return url


def is_loopback(address: str) -> bool:
    """True for a loopback address (127.0.0.0/8, ::1); a bound server's address is numeric."""
    try:
        return ipaddress.ip_address(address.split("%")[0]).is_loopback
    except ValueError:
        return address == "localhost"


def exposed_warning(host: str, port: int) -> str:
    """The one line printed when the dashboard listens beyond this machine."""
    return (
        f"tuner: warning: the dashboard listens on {host}:{port}, reachable from other "
        "machines; it has no login and anyone who reaches it can rename and delete studies "
        "(use the default --host 127.0.0.1 with an SSH tunnel for remote access)"
    )


def dashboard_url(host: str, port: int, study_id: int | None = None) -> str:
    """The address to open in a browser: ``http://127.0.0.1:8080/dashboard/``, or a study's
    page ``http://127.0.0.1:8080/dashboard/studies/<study_id>``.

    A wildcard bind address (``0.0.0.0``, ``::``) is shown as the loopback address.
    """
    shown = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    if ":" in shown:
        shown = f"[{shown}]"
    page = "" if study_id is None else f"studies/{study_id}"
    return f"http://{shown}:{port}/dashboard/{page}"


class _ServerHandler(ServerHandler):
    """wsgiref's handler, except that Ctrl-C during a request stops the server.

    wsgiref catches everything an application raises, ``KeyboardInterrupt`` included, prints
    its traceback and serves on; here it propagates out of ``serve_forever`` instead.
    """

    def handle_error(self) -> None:
        if isinstance(sys.exc_info()[1], KeyboardInterrupt):
            raise
        super().handle_error()

    def close(self) -> None:
        if self.status is None:  # interrupted before a response began: nothing to log
            SimpleHandler.close(self)
        else:
            super().close()


class _QuietHandler(WSGIRequestHandler):
    """No line per request on stderr (the browser polls); errors are still printed; Ctrl-C
    during a request stops the server (see :class:`_ServerHandler`)."""

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass

    def handle(self) -> None:
        """``WSGIRequestHandler.handle`` (Python 3.11-3.13) with :class:`_ServerHandler`."""
        self.raw_requestline = self.rfile.readline(65537)
        if len(self.raw_requestline) > 65536:
            self.requestline = ""
            self.request_version = ""
            self.command = ""
            self.send_error(414)
            return
        if not self.parse_request():
            return
        handler = _ServerHandler(
            self.rfile, self.wfile, self.get_stderr(), self.get_environ(), multithread=False
        )
        handler.request_handler = self
        handler.run(self.server.get_app())


class _Server6(WSGIServer):
    address_family = socket.AF_INET6


def open_server(
    storage: optuna.storages.BaseStorage, host: str = "127.0.0.1", port: int = 8080,
    artifacts: Path | None = None,
) -> WSGIServer:
    """optuna-dashboard's WSGI app on a bound (not yet serving) ``wsgiref`` server.

    Args:
        storage: the Optuna storage to show.
        artifacts: the Optuna artifact folder whose files the trials list (the per-epoch
            series that ``tuner tune`` writes, see :func:`tuner.study.artifact_folder`), or
            None for none.
        host: bind address; ``port`` 0 lets the system pick a free port (``server.server_port``).

    Returns:
        The server; call ``serve_forever()`` (``shutdown()`` from another thread stops it) and
        ``server_close()``.

    Raises:
        DashboardError: the address cannot be bound (port in use, unknown host).
    """
    import optuna_dashboard

    store = None
    if artifacts is not None:
        from optuna.artifacts import FileSystemArtifactStore

        store = FileSystemArtifactStore(artifacts)
    app = optuna_dashboard.wsgi(storage, artifact_store=store)
    server_class = _Server6 if ":" in host else WSGIServer
    try:
        return make_server(host, port, app, server_class=server_class, handler_class=_QuietHandler)
    except (OSError, OverflowError) as exc:  # OverflowError: a port above 65535
        reason = str(getattr(exc, "strerror", None) or exc).rstrip(".")
        raise DashboardError(
            f"cannot serve the dashboard on {host}:{port}: {reason}; pass another "
            f"--port (or --host)."
        ) from None


def serve(
    study_file: str | None = None,
    storage: str | None = None,
    host: str = "127.0.0.1",
    port: int = 8080,
    *,
    echo: Callable[[str], None] | None = None,
) -> None:
    """Serve optuna-dashboard until interrupted (Ctrl-C), printing the URL to open.

    Ctrl-C stops it cleanly also in the middle of a request (one line, no traceback). Binding a
    non-loopback address (``--host 0.0.0.0``) prints a warning line on stderr: the dashboard
    has no login and can delete studies.

    Raises:
        StorageError, ConfigError: see :func:`dashboard_storage_url`; the storage cannot be
            opened.
        DashboardError: see :func:`open_server`.
    """
    echo = echo or (lambda line: print(line, flush=True))
    url = dashboard_storage_url(study_file, storage)
    store = make_storage(url)
    summaries = optuna.study.get_all_study_summaries(store)
    names = [s.study_name for s in summaries]
    from tuner.study import artifact_folder

    server = open_server(store, host, port, artifact_folder(store))
    try:
        shown = ", ".join(names) if names else "none yet; they appear as `tuner tune` starts them"
        echo(f"storage {redact_url(url)}: studies {shown}")
        if getattr(store, "read_only", None):  # tuner.storage_guard.GuardedRDBStorage
            echo(f"read-only storage ({store.read_only}): the dashboard shows the studies; "
                 f"notes and other edits made in it are not saved")
        page = dashboard_url(host, server.server_port)  # the list, or the study's own page
        if study_file is not None and names:
            from tuner.config import load_study_config

            name = load_study_config(study_file).name
            if name not in names:
                echo(f"study '{name}' is not in this storage yet (run `tuner tune {study_file}`)")
            else:
                study_id = summaries[names.index(name)]._study_id
                page = dashboard_url(host, server.server_port, study_id)
        if not is_loopback(server.server_address[0]):
            print(exposed_warning(host, server.server_port), file=sys.stderr, flush=True)
        try:  # from the moment the URL is shown, Ctrl-C is the way to stop
            echo(f"optuna-dashboard: open {page}  (Ctrl-C stops)")
            server.serve_forever()
        except KeyboardInterrupt:
            print("dashboard stopped", file=sys.stderr)
    finally:
        server.server_close()
