"""The ``candor`` command: serve, demo, models, keys, openapi and db (all honour CANDOR_* variables)."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from pathlib import Path

from api.settings import Settings
from model_store.archive_limits import ArchiveLimits
from model_store.blob_backends import ArtifactStoreConfigError
from model_store.errors import CandorError, InvalidInput
from model_store.keys import SCOPES
from model_store.manifest import read_manifest_text
from model_store.store import Store

DEMO_KEY_FILE = "demo-key.txt"


def _store(settings: Settings) -> Store:
    return Store(
        settings.data_dir,
        settings.resolved_database_url,
        settings.model_cache_size,
        artifact_store=settings.artifact_store,
    )


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    conf = str(Path(__file__).with_name("gunicorn_conf.py"))
    argv = [sys.executable, "-m", "gunicorn", "-c", conf]
    if args.bind:
        argv += ["--bind", args.bind]
    os.execv(sys.executable, argv)  # noqa: S606 - replaces this process with gunicorn


def cmd_demo_install(args: argparse.Namespace, settings: Settings) -> int:
    from api.demo import install_demos

    installed = install_demos(_store(settings).registry)
    print("installed: " + ", ".join(installed) if installed else "demo models already registered")
    if not settings.resolved_audit_key_file.exists():
        return cmd_audit_init(argparse.Namespace(origin=None), settings)
    return 0


def cmd_models_register(args: argparse.Namespace, settings: Settings) -> int:
    manifest = read_manifest_text(Path(args.manifest).read_text())
    registry = _store(settings).registry
    if args.artifact is None and (manifest.is_text or manifest.format != "remote"):
        raise InvalidInput.field("artifact", "Only a remote model (format: remote) has no --artifact.")
    if manifest.is_text:
        from model_store.text.files import read_directory

        files = read_directory(Path(args.artifact), settings.max_archive_members, settings.max_archive_bytes)
        info = registry.register_text(manifest, files)
    else:
        if args.reference is None:
            raise InvalidInput.field("reference", "Tabular models need --reference.")
        info = registry.register_tabular(
            manifest,
            Path(args.artifact).read_bytes() if args.artifact is not None else None,
            Path(args.reference).read_bytes(),
            ArchiveLimits.from_settings(settings),
        )
    print(f"registered {info.name} version {info.version} sha256 {info.artifact_sha256}")
    return 0


def cmd_models_list(args: argparse.Namespace, settings: Settings) -> int:
    for model in _store(settings).registry.list_models():
        print(f"{model['name']}\tlatest={model['latest_version']}\tproduction={model['production_version']}")
    return 0


def cmd_models_promote(args: argparse.Namespace, settings: Settings) -> int:
    info = _store(settings).registry.promote(args.name, args.version)
    print(f"{info.name} version {info.version} is now production")
    return 0


def cmd_keys_create(args: argparse.Namespace, settings: Settings) -> int:
    models = args.models.split(",") if args.models else None
    token, principal = _store(settings).keys.create(args.name, args.scopes.split(","), models)
    print(token)
    print(
        f"# key id {principal.key_id}, scopes {','.join(sorted(principal.scopes))}; shown once",
        file=sys.stderr,
    )
    return 0


def cmd_keys_list(args: argparse.Namespace, settings: Settings) -> int:
    for key in _store(settings).keys.list():
        state = "revoked" if key["revoked"] else "active"
        models = ",".join(key["models"]) if key["models"] is not None else "*"
        print(f"{key['key_id']}\t{key['name']}\t{','.join(map(str, key['scopes']))}\t{models}\t{state}")
    return 0


def cmd_keys_revoke(args: argparse.Namespace, settings: Settings) -> int:
    return 0 if _store(settings).keys.revoke(args.key_id) else 1


def cmd_keys_rotate(args: argparse.Namespace, settings: Settings) -> int:
    rotated = _store(settings).keys.rotate(args.key_id)
    if rotated is None:
        print(f"error: no active key {args.key_id}", file=sys.stderr)
        return 1
    print(rotated[0])
    print(f"# key id {args.key_id}: new secret, shown once; the old one no longer works", file=sys.stderr)
    return 0


def cmd_keys_ensure_demo(args: argparse.Namespace, settings: Settings) -> int:
    """Create (once) a demo key kept in the data dir, and print it with an example request."""
    store = _store(settings)
    path = settings.data_dir / DEMO_KEY_FILE
    token = path.read_text().strip() if path.exists() else ""
    if not token or store.keys.authenticate(token) is None:
        token, _ = store.keys.create("demo", ["explain", "models:write", "audit:read"])
        path.write_text(token + "\n")
        path.chmod(0o600)
    host = settings.bind
    print(f"Demo API key (also in {path}):\n  {token}\n")
    print("Example request:")
    print(
        f"  curl -s -X POST http://{host}/v1/models/loan/versions/production/explain/shap \\\n"
        f"    -H 'Authorization: Bearer {token}' -H 'Content-Type: application/json' \\\n"
        f"    -d @tests/data/loan_shap_request.json"
    )
    return 0


def cmd_audit_verify(args: argparse.Namespace, settings: Settings) -> int:
    """Check the audit log (every leaf, the root, the latest checkpoint) and every blob a record refers to."""
    if args.offline:
        return cmd_audit_verify_offline(args, settings)
    from model_store.audit_blobs import verify_trail

    store = _store(settings)
    verdict = verify_trail(store.audit_log)
    print(json.dumps(verdict, indent=2))
    return 0 if verdict["ok"] else 1


def cmd_audit_purge(args: argparse.Namespace, settings: Settings) -> int:
    """Delete the bodies of records older than the retention period (their leaf hashes stay, so the log
    still verifies), then the blobs only those records referred to."""
    days = args.days if args.days is not None else settings.retention_days
    if days <= 0:
        print("retention is unlimited (CANDOR_RETENTION_DAYS=0): nothing purged")
        return 0
    from model_store.audit_blobs import AuditBlobs

    before = dt.datetime.now(dt.UTC) - dt.timedelta(days=days)
    store = _store(settings)
    outcome = store.audit.purge(before)
    blobs = AuditBlobs(store.sessions).collect(store.audit)
    print(
        f"purged {outcome['purged']} records before {before.isoformat()} (their leaf hashes stay); "
        f"deleted {outcome['chunks']} job chunks and {blobs} blobs no record refers to"
    )
    return 0


def cmd_audit_init(args: argparse.Namespace, settings: Settings) -> int:
    """Create the checkpoint signing key (never overwrites one) and print its verifier key."""
    from api.ops.audit_key import AuditKeyError, create_key

    path = settings.resolved_audit_key_file
    try:
        signer = create_key(path, args.origin)
    except AuditKeyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"created the audit log's signing key {path} (origin {signer.name}); its verifier key:")
    print(signer.verifier.key())
    return 0


def cmd_audit_key(args: argparse.Namespace, settings: Settings) -> int:
    """Print the verifier key of the checkpoint signing key."""
    from api.ops.audit_key import AuditKeyError, read_key

    try:
        signer = read_key(settings.resolved_audit_key_file)
    except AuditKeyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(signer.verifier.key())
    return 0


def cmd_audit_verify_offline(args: argparse.Namespace, settings: Settings) -> int:
    """Check an export against signed checkpoints with the verifier key (``python -m candor_verify``)."""
    from candor_verify.offline import check_export_file

    if not args.checkpoint or not args.key:
        print("error: audit verify --offline needs --checkpoint and --key", file=sys.stderr)
        return 2
    report = check_export_file(args.offline, args.checkpoint, args.key, args.old_checkpoint)
    print(json.dumps(report, indent=2))
    return 0 if report["ok"] else 1


def cmd_jobs_run(args: argparse.Namespace, settings: Settings) -> int:
    """Claim queued (or stale) jobs and compute them on Dask until stopped (``--once``: until none left)."""
    import logging

    from api.jobs.runner import Runner
    from model_store.db import warn_of_sqlite

    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    logging.getLogger("distributed").setLevel(logging.WARNING)  # its INFO lines narrate every connection
    runner = Runner(settings)
    warn_of_sqlite(runner.store.engine, logging.getLogger("candor.jobs"))
    runner.install_signal_handlers()
    done = runner.run(once=args.once)
    print(f"runner {runner.runner_id} stopped after {done} job(s)")
    return 0


def cmd_openapi(args: argparse.Namespace, settings: Settings) -> int:
    import tempfile

    from api.http.app import create_app
    from api.http.docs import spec_yaml

    with tempfile.TemporaryDirectory() as tmp:
        app = create_app({"data_dir": tmp, "database_url": ""})
        sys.stdout.write(spec_yaml(app.extensions["flask-smorest"]["apis"][""]["ext_obj"]))
    return 0


def cmd_db_upgrade(args: argparse.Namespace, settings: Settings) -> int:
    _store(settings)
    print("database is at the newest schema")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="candor", description="Candor explainability server")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="serve the API with gunicorn")
    serve.add_argument("--bind", help="HOST:PORT (default CANDOR_BIND or 127.0.0.1:8000)")
    serve.set_defaults(func=cmd_serve)

    demo = sub.add_parser("demo").add_subparsers(dest="action", required=True)
    demo.add_parser("install", help="build and register the demo models").set_defaults(func=cmd_demo_install)

    models = sub.add_parser("models").add_subparsers(dest="action", required=True)
    register = models.add_parser("register", help="register a new model version")
    register.add_argument("--manifest", required=True)
    register.add_argument("--artifact", help="the model's file or directory (none for format: remote)")
    register.add_argument("--reference", help="reference rows (tabular models)")
    register.set_defaults(func=cmd_models_register)
    models.add_parser("list").set_defaults(func=cmd_models_list)
    promote = models.add_parser("promote", help="make a version the production stage")
    promote.add_argument("name")
    promote.add_argument("version")
    promote.set_defaults(func=cmd_models_promote)

    keys = sub.add_parser("keys").add_subparsers(dest="action", required=True)
    create = keys.add_parser("create", help="create a key; prints it once")
    create.add_argument("--name", required=True)
    create.add_argument("--scopes", default="explain", help=f"comma-separated from {','.join(SCOPES)}")
    create.add_argument("--models", help="comma-separated model names this key may see (default: all)")
    create.set_defaults(func=cmd_keys_create)
    keys.add_parser("list").set_defaults(func=cmd_keys_list)
    revoke = keys.add_parser("revoke")
    revoke.add_argument("key_id")
    revoke.set_defaults(func=cmd_keys_revoke)
    rotate = keys.add_parser("rotate", help="a new secret for a key (the old one stops working)")
    rotate.add_argument("key_id")
    rotate.set_defaults(func=cmd_keys_rotate)
    keys.add_parser("ensure-demo", help="create the demo key once and print it").set_defaults(
        func=cmd_keys_ensure_demo
    )

    audit = sub.add_parser("audit").add_subparsers(dest="action", required=True)
    verify = audit.add_parser(
        "verify", help="check the audit log (every leaf, the root, the latest checkpoint) and its blobs"
    )
    verify.add_argument(
        "--offline", metavar="EXPORT", help="check an export file instead (with --checkpoint, --key)"
    )
    verify.add_argument("--checkpoint", metavar="CP", help="--offline: the signed checkpoint (a file)")
    verify.add_argument("--key", help="--offline: the verifier key, or a file holding it")
    verify.add_argument(
        "--old-checkpoint", metavar="OLD", help="--offline: an older signed checkpoint (a file)"
    )
    verify.set_defaults(func=cmd_audit_verify)
    init = audit.add_parser("init", help="create the checkpoint signing key and print its verifier key")
    init.add_argument("--origin", help="the log's name (default candor.local/audit/<8 random hex>)")
    init.set_defaults(func=cmd_audit_init)
    audit.add_parser("key", help="print the verifier key of the checkpoint signing key").set_defaults(
        func=cmd_audit_key
    )
    purge = audit.add_parser(
        "purge", help="delete records past the retention period (keeps their leaf hashes)"
    )
    purge.add_argument("--days", type=int, help="override CANDOR_RETENTION_DAYS")
    purge.set_defaults(func=cmd_audit_purge)

    jobs = sub.add_parser("jobs").add_subparsers(dest="action", required=True)
    run = jobs.add_parser("run", help="run batch jobs on Dask (CANDOR_DASK_SCHEDULER, else a LocalCluster)")
    run.add_argument("--once", action="store_true", help="exit when no job is left to claim")
    run.set_defaults(func=cmd_jobs_run)

    sub.add_parser("openapi", help="print the OpenAPI document").set_defaults(func=cmd_openapi)
    db = sub.add_parser("db").add_subparsers(dest="action", required=True)
    db.add_parser("upgrade", help="migrate the database").set_defaults(func=cmd_db_upgrade)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = Settings.load()
    try:
        return int(args.func(args, settings))
    except CandorError as exc:
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except ArtifactStoreConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (OSError, UnicodeDecodeError) as exc:  # an unreadable --manifest, --artifact or --reference
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _one_line(exc: CandorError) -> str:
    """The error's detail and the field messages it does not already say, on one line."""
    fields = [f"{field}: {'; '.join(map(str, messages))}" for field, messages in exc.errors.items()]
    return " ".join([exc.detail, *(f for f in fields if f not in exc.detail)]).replace("\n", " ")


if __name__ == "__main__":
    sys.exit(main())
