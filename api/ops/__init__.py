"""Running Candor: the command line, gunicorn's configuration and worker, worker warm-up and lifecycle."""
