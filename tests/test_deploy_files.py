"""docs/deploy/ (docs/scale-out.md "Deploying on several hosts") stays in step with the code: the
config files parse as ``tierstore serve`` reads them, every flag and ``TIERSTORE_*`` variable the
systemd unit, the env file and the Kubernetes manifest use is a ``serve`` option, the probes are
the server's, and the manifest is YAML of the kinds the page names."""

from __future__ import annotations

import argparse
import configparser
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import REPO
from tierstore.api._routes import PROBES
from tierstore.cli._serve import SERVE_OPTIONS, ConfigError, config_fields, resolve_options
from tierstore.server import ServerConfig

DEPLOY = REPO / "docs" / "deploy"
ENVS = {o.env for o in SERVE_OPTIONS}
AWS_CHAIN = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}  # the store's keys: the AWS credential chain


def _serve_help() -> str:
    proc = subprocess.run([sys.executable, "-m", "tierstore", "serve", "--help"], capture_output=True, text=True,
                          cwd=REPO, timeout=60, check=True)  # fmt: skip
    return proc.stdout


def _config(path: Path) -> ServerConfig:
    """``path`` resolved as ``serve --config`` does (no flag, no env), into the server's config."""
    return ServerConfig(**config_fields(resolve_options(argparse.Namespace(config=str(path)), environ={})))


def _flags(argv: list[str]) -> list[str]:
    return [a.split("=", 1)[0] for a in argv if a.startswith("--")]


def test_the_gateway_config_file_parses_as_serve_reads_it() -> None:
    cfg = _config(DEPLOY / "gateway.toml")
    resolved = resolve_options(argparse.Namespace(config=str(DEPLOY / "gateway.toml")), environ={})
    assert resolved["address"][0] == ("0.0.0.0", 9000)  # _cmd_serve's, not a ServerConfig field
    assert cfg.store.startswith("s3://tierstore-blobs/") and cfg.workers == 4
    assert cfg.cache_bytes == 200_000_000_000 and cfg.catalog == "" and cfg.store_secret_key == ""  # no secret


def test_a_key_the_server_does_not_know_is_refused(tmp_path: Path) -> None:
    """The check above can fail: a misspelt key is an error, not ignored."""
    bad = tmp_path / "gateway.toml"
    bad.write_text((DEPLOY / "gateway.toml").read_text() + 'master-key = "/etc/x"\n')
    try:
        _config(bad)
    except ConfigError as exc:
        assert "unknown key 'master-key'" in str(exc)
    else:
        raise AssertionError("an unknown key was accepted")


def test_the_systemd_unit_starts_serve_with_flags_it_has() -> None:
    unit = configparser.ConfigParser(interpolation=None, strict=False)
    unit.optionxform = str  # type: ignore[assignment,method-assign]  # systemd keys are case-sensitive
    unit.read(DEPLOY / "tierstore-gateway.service")
    service = unit["Service"]
    argv = shlex.split(service["ExecStart"])
    assert argv[1:3] == ["serve", "--config"] and argv[3] == "/etc/tierstore/gateway.toml"
    help_text = _serve_help()
    assert _flags(argv) == ["--config", "--data", "--master-key-file"]
    for flag in _flags(argv):
        assert f"{flag} " in help_text, f"tierstore serve --help has no {flag}"
    assert service["EnvironmentFile"] == "/etc/tierstore/gateway.env" and service["User"] == "tierstore"
    assert int(service["TimeoutStopSec"]) > _config(DEPLOY / "gateway.toml").shutdown_grace_s


def test_the_env_file_sets_only_serve_options_and_the_aws_chain() -> None:
    names = [line.split("=", 1)[0] for line in (DEPLOY / "gateway.env").read_text().splitlines()
             if line and not line.startswith("#")]  # fmt: skip
    assert set(names) - AWS_CHAIN <= ENVS, set(names) - AWS_CHAIN - ENVS
    assert {"TIERSTORE_CATALOG", "TIERSTORE_ACCESS_KEY", "TIERSTORE_SECRET_KEY", *AWS_CHAIN} <= set(names)


def test_the_kubernetes_sketch_is_yaml_the_code_agrees_with(tmp_path: Path) -> None:
    docs: list[dict[str, Any]] = list(yaml.safe_load_all((DEPLOY / "k8s.yaml").read_text()))
    by_kind = {d["kind"]: d for d in docs}
    assert set(by_kind) == {"Secret", "ConfigMap", "Deployment", "Service", "PodDisruptionBudget"}
    toml = tmp_path / "gateway.toml"  # the ConfigMap's file parses as serve reads it
    toml.write_text(by_kind["ConfigMap"]["data"]["gateway.toml"])
    cfg = _config(toml)
    pod = by_kind["Deployment"]["spec"]["template"]["spec"]
    (gateway,) = pod["containers"]
    assert gateway["command"][:2] == ["tierstore", "serve"]
    assert all(f"{f} " in _serve_help() for f in _flags(gateway["command"]))
    env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in gateway["env"]}
    assert set(env) - AWS_CHAIN <= ENVS and env["TIERSTORE_CATALOG"]["name"] == "tierstore"
    secret_keys = set(by_kind["Secret"]["stringData"])
    assert {ref["key"] for ref in env.values()} <= secret_keys  # every reference names a key of the Secret
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert gateway[probe]["httpGet"]["path"] in PROBES
    assert gateway["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    mounts = {m["name"]: m["mountPath"] for m in gateway["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert cfg.master_key_file.startswith(mounts["master-key"] + "/")
    assert volumes["master-key"]["secret"]["defaultMode"] == 0o400
    assert cfg.data_dir == mounts["cache"] and "emptyDir" in volumes["cache"]
    assert pod["terminationGracePeriodSeconds"] > cfg.shutdown_grace_s
    assert by_kind["Deployment"]["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert "sessionAffinity" not in by_kind["Service"]["spec"]
