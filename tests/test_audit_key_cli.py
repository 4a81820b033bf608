"""``candor audit init`` / ``key`` / ``verify --offline`` and ``demo install``'s key, on a real data dir."""

from __future__ import annotations

import json
import re
import stat
from pathlib import Path

import pytest
from test_offline_verify import VKEY, build, checkpoint_of

import api.demo
from api.ops.cli import main
from api.settings import Settings
from candor_verify import checkpoint, note


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    target = tmp_path / "var"
    monkeypatch.setenv("CANDOR_DATA_DIR", str(target))
    monkeypatch.delenv("CANDOR_DATABASE_URL", raising=False)
    monkeypatch.delenv("CANDOR_AUDIT_KEY_FILE", raising=False)
    return target


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_init_creates_a_private_key_and_prints_its_verifier(
    data_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    assert main(["audit", "init"]) == 0
    printed = capsys.readouterr().out.strip().splitlines()[-1]
    path = data_dir / "audit" / "signing.key"
    assert Settings.load().resolved_audit_key_file == path
    assert _mode(path) == 0o600 and _mode(path.parent) == 0o700
    signer = note.load_signer(path)
    assert signer is not None and signer.verifier.key() == printed
    assert re.fullmatch(r"candor\.local/audit/[0-9a-f]{8}", signer.name)
    verifier = note.Verifier.from_key(printed)  # the printed key checks what the file's key signs
    cp = checkpoint.Checkpoint(signer.name, 0, b"\0" * 32)
    assert checkpoint.open_checkpoint(checkpoint.signed(cp, signer), verifier) == cp
    assert main(["audit", "key"]) == 0
    assert capsys.readouterr().out.strip() == printed


def test_init_never_overwrites(data_dir: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["audit", "init", "--origin", "example.org/audit"]) == 0
    path = data_dir / "audit" / "signing.key"
    before = path.read_bytes()
    assert before.startswith(b"PRIVATE+KEY+example.org/audit+")
    capsys.readouterr()
    assert main(["audit", "init"]) == 1
    assert "already exists" in capsys.readouterr().err
    assert path.read_bytes() == before


def test_init_refuses_a_bad_origin(data_dir: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["audit", "init", "--origin", "has space"]) == 1
    assert "invalid origin" in capsys.readouterr().err
    assert not (data_dir / "audit" / "signing.key").exists()


def test_key_without_a_key_or_with_a_malformed_one(data_dir: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["audit", "key"]) == 1
    assert "candor audit init" in capsys.readouterr().err
    path = data_dir / "audit" / "signing.key"
    path.parent.mkdir(parents=True)
    path.write_text("PRIVATE+KEY+broken\n")
    assert main(["audit", "key"]) == 1
    assert "malformed signing key file" in capsys.readouterr().err


def test_key_file_setting(data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    elsewhere = tmp_path / "keys" / "log.key"
    monkeypatch.setenv("CANDOR_AUDIT_KEY_FILE", str(elsewhere))
    assert Settings.load().resolved_audit_key_file == elsewhere
    assert main(["audit", "init"]) == 0
    assert elsewhere.exists() and not (data_dir / "audit").exists()
    assert _mode(elsewhere.parent) == 0o700


def test_demo_install_creates_the_key_once(data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """The demo models are built by the e2e tests; here only the key step of ``demo install`` is checked."""
    monkeypatch.setattr(api.demo, "install_demos", lambda registry: [])
    assert main(["demo", "install"]) == 0
    path = data_dir / "audit" / "signing.key"
    first = path.read_bytes()
    assert "verifier key" in capsys.readouterr().out
    assert main(["demo", "install"]) == 0
    assert path.read_bytes() == first and "verifier key" not in capsys.readouterr().out


def test_audit_verify_offline(data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    lines = build(8, purged=[2])
    export = tmp_path / "export.jsonl"
    export.write_text("".join(json.dumps(x) + "\n" for x in lines))
    (tmp_path / "cp").write_text(checkpoint_of(lines))
    (tmp_path / "old").write_text(checkpoint_of(lines, 5))
    args = ["audit", "verify", "--offline", str(export), "--checkpoint", str(tmp_path / "cp"), "--key", VKEY]
    assert main([*args, "--old-checkpoint", str(tmp_path / "old")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and report["leaves"] == 8 and report["old_checkpoint"]["size"] == 5
    export.write_text("".join(json.dumps(x) + "\n" for x in lines[:-1]))
    assert main(args) == 1
    assert "fewer than" in json.loads(capsys.readouterr().out)["first_problem"]["reason"]
    assert main(["audit", "verify", "--offline", str(export), "--key", VKEY]) == 2
    assert "--checkpoint" in capsys.readouterr().err
