"""``tuner dashboard``: serve optuna-dashboard over the storage a study file (or URL) names."""

from __future__ import annotations

from tuner.storage import check_storage_exists, make_storage, redact_url, resolve_storage_url

__all__ = ["dashboard_storage_url", "serve"]


def dashboard_storage_url(study_file: str | None, storage: str | None) -> str:
    """The storage URL to serve, resolved exactly as ``tune`` resolves it.

    Raises:
        StorageError: an SQLite file that does not exist or is empty (never creates one).
        ConfigError: the study file is invalid.
    """
    cfg = None
    if study_file is not None:
        from tuner.config import load_study_config

        cfg = load_study_config(study_file)
    url = resolve_storage_url(cfg, storage)
    check_storage_exists(url)
    return url


def serve(
    study_file: str | None = None,
    storage: str | None = None,
    host: str = "127.0.0.1",
    port: int = 8080,
) -> None:
    """Serve optuna-dashboard until interrupted (Ctrl-C)."""
    import optuna_dashboard

    url = dashboard_storage_url(study_file, storage)
    print(f"optuna-dashboard on {redact_url(url)}: open http://{host}:{port}/", flush=True)
    optuna_dashboard.run_server(make_storage(url), host=host, port=port)
