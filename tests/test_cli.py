"""The ``candor`` command on a real data dir: register, list, promote, keys and the demo key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from tiny_models import tiny_frame, tiny_manifest, tiny_pipeline

from api.ops.cli import main
from model_store.safe_load import dump_skops
from model_store.store import Store


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    target = tmp_path / "var"
    monkeypatch.setenv("CANDOR_DATA_DIR", str(target))
    monkeypatch.delenv("CANDOR_DATABASE_URL", raising=False)
    return target


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    frame = tiny_frame()
    paths = {
        "manifest": tmp_path / "manifest.yaml",
        "artifact": tmp_path / "model.skops",
        "reference": tmp_path / "reference.csv",
    }
    paths["manifest"].write_text(yaml.safe_dump(tiny_manifest("tiny")))
    paths["artifact"].write_bytes(dump_skops(tiny_pipeline(frame)))
    frame.to_csv(paths["reference"], index=False)
    return paths


def register(files: dict[str, Path]) -> int:
    return main(
        [
            "models",
            "register",
            "--manifest",
            str(files["manifest"]),
            "--artifact",
            str(files["artifact"]),
            "--reference",
            str(files["reference"]),
        ]
    )


def test_register_list_and_promote(data_dir, files, capsys):
    assert register(files) == 0
    assert register(files) == 0
    out = capsys.readouterr().out
    assert "registered tiny version 1" in out and "registered tiny version 2" in out
    assert main(["models", "promote", "tiny", "1"]) == 0
    assert main(["models", "list"]) == 0
    assert "tiny\tlatest=2\tproduction=1" in capsys.readouterr().out
    store = Store(data_dir, f"sqlite:///{data_dir / 'candor.db'}")
    assert store.registry.resolve("tiny", "production").version == 1
    store.close()


def test_a_bad_manifest_exits_2_naming_the_field(data_dir, files, capsys):
    manifest = tiny_manifest("tiny")
    manifest["classes"] = ["yes", "no"]
    files["manifest"].write_text(yaml.safe_dump(manifest))
    assert register(files) == 2
    assert "classes" in capsys.readouterr().err
    assert main(["models", "list"]) == 0
    assert capsys.readouterr().out == ""


def test_keys_create_list_revoke(data_dir, capsys):
    assert main(["keys", "create", "--name", "web", "--scopes", "explain,audit:read"]) == 0
    token = capsys.readouterr().out.strip()
    store = Store(data_dir, f"sqlite:///{data_dir / 'candor.db'}")
    principal = store.keys.authenticate(token)
    assert principal is not None and principal.scopes == {"explain", "audit:read"}
    assert main(["keys", "list"]) == 0
    listing = capsys.readouterr().out
    assert principal.key_id in listing and token not in listing
    assert main(["keys", "revoke", principal.key_id]) == 0
    assert store.keys.authenticate(token) is None
    store.close()
    assert main(["keys", "create", "--name", "bad", "--scopes", "root"]) == 2


def test_demo_key_is_created_once_and_printed_with_an_example(data_dir, capsys):
    assert main(["keys", "ensure-demo"]) == 0
    first = capsys.readouterr().out
    assert main(["keys", "ensure-demo"]) == 0
    second = capsys.readouterr().out
    token = (data_dir / "demo-key.txt").read_text().strip()
    assert token in first and token in second
    assert "curl" in first and "/explain/shap" in first
    assert (data_dir / "demo-key.txt").stat().st_mode & 0o077 == 0
