"""``python -m candor_verify``: check an audit export or a proof offline; prints a JSON report.

Exit status: 0 when everything checks, 1 when something does not (the report's ``first_problem`` says what),
2 for a usage error.
"""

from __future__ import annotations

import argparse
import json
import sys

from candor_verify.offline import Report, check_export_file, check_proof_file


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m candor_verify",
        description="Check a Candor audit export or proof against signed checkpoints.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    export = sub.add_parser("export", help="check an export (JSON lines) against a checkpoint")
    export.add_argument("export", metavar="EXPORT.jsonl")
    export.add_argument(
        "--checkpoint", required=True, metavar="CP", help="the signed checkpoint note (a file)"
    )
    proof = sub.add_parser("proof", help="check an inclusion or consistency proof (JSON)")
    proof.add_argument("proof", metavar="PROOF.json")
    for command in (export, proof):
        command.add_argument("--key", required=True, help="the verifier key, or a file holding it")
        command.add_argument("--old-checkpoint", metavar="OLD", help="an older signed checkpoint (a file)")
    return parser


def run(args: argparse.Namespace) -> Report:
    """The report for parsed arguments."""
    if args.command == "export":
        return check_export_file(args.export, args.checkpoint, args.key, args.old_checkpoint)
    return check_proof_file(args.proof, args.key, args.old_checkpoint)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # exits 2 on a usage error
    report = run(args)
    print(json.dumps(report, indent=2))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
