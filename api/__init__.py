"""Candor's API package: the app factory (``api.app.create_app``), settings, auth, errors, schemas, versioned
blueprints, the explanation service, jobs and the CLI. Importing the package loads none of them (a Dask worker
that imports ``api.jobs.compute`` must not import Flask)."""
