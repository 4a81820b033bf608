"""Candor's API package, in layers: ``ops`` (CLI, gunicorn), ``http`` (the app factory
``api.http.app.create_app``, views), ``demo``, ``jobs``, ``service``, ``methods``, ``schemas``, and
``settings``. Importing the package loads none of them (a Dask worker that imports ``api.jobs.compute`` must
not import Flask)."""
