"""gunicorn settings for Candor (``candor serve`` passes this file with ``-c``); CANDOR_* variables apply."""

from api.settings import Settings

_settings = Settings.load()

bind = _settings.bind
workers = _settings.workers
threads = _settings.threads
worker_class = "gthread"
timeout = _settings.timeout
graceful_timeout = 30
keepalive = 5
max_requests = 2000
max_requests_jitter = 200
accesslog = "-"
errorlog = "-"
loglevel = _settings.log_level
wsgi_app = "api.wsgi:app"
control_socket_disable = True  # no shared control socket in $HOME; manage with signals


def post_worker_init(worker):  # type: ignore[no-untyped-def]
    """Move the app's ~0.5M start-up objects out of the collector's sight: full collections stay short."""
    import gc

    gc.collect()
    gc.freeze()


def on_starting(server):  # type: ignore[no-untyped-def]
    """Migrate the database once, in the master, before any worker starts."""
    from model_store.db import make_engine
    from model_store.migrate import upgrade_to_head

    engine = make_engine(_settings.resolved_database_url)
    upgrade_to_head(engine)
    engine.dispose()
