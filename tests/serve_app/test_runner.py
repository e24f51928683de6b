"""The pieces of ``squall up`` that need no cluster: Serve env, config file, replica settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from serve_app.runner import (
    SERVE_THROUGHPUT_ENV,
    apply_serve_env,
    deployment_options,
    replica_settings,
    serve_config_path,
)
from serve_app.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def test_serve_env_defaults_never_override_the_user() -> None:
    env = {"RAY_SERVE_ENABLE_HA_PROXY": "0"}
    effective = apply_serve_env(env)
    assert effective == {
        "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
        "RAY_SERVE_ENABLE_HA_PROXY": "0",
        "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "2",
    }
    assert set(env) == set(SERVE_THROUGHPUT_ENV)


def test_deployment_options_come_from_serve_config() -> None:
    path = serve_config_path()
    assert path is not None and path.name == "serve_config.yaml"
    options = deployment_options(ROOT / "serve_config.yaml")
    assert "name" not in options
    assert options["max_ongoing_requests"] == 32
    assert options["ray_actor_options"] == {"num_cpus": 0.5}
    assert deployment_options(None) == {}


def test_serve_config_is_a_valid_serve_deploy_schema() -> None:
    yaml = pytest.importorskip("yaml")
    schema = pytest.importorskip("ray.serve.schema")
    config = schema.ServeDeploySchema.model_validate(
        yaml.safe_load((ROOT / "serve_config.yaml").read_text())
    )
    (app,) = config.applications
    assert app.import_path == "serve_app.deployment:app"
    assert app.deployments[0].name == "SquallAPI"


def test_replica_settings_make_sqlite_paths_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    values = replica_settings(Settings(database_url="sqlite:///./var/x.db"))
    assert values["database_url"] == f"sqlite:///{tmp_path / 'var' / 'x.db'}"
    pg = "postgresql+psycopg://u:pw@db:5432/squall"
    assert replica_settings(Settings(database_url=pg))["database_url"] == pg
    rebuilt = Settings(**replica_settings(Settings(database_url=pg, coins=["btc"])))
    assert rebuilt.coins == ["BTC"] and rebuilt.database_url == pg


def test_build_app_rejects_unknown_settings() -> None:
    pytest.importorskip("ray")
    from serve_app.deployment import build_app

    with pytest.raises(ValueError, match="unknown settings \\['colour'\\]"):
        build_app({"colour": "red"})
    assert build_app({"log_level": "DEBUG"}) is not None


def test_port_settings_win_and_an_exported_serve_variable_is_kept_otherwise() -> None:
    from serve_app.instance import port_env

    env = {"RAY_SERVE_HAPROXY_STATS_PORT": "18404"}
    values, inherited = port_env(Settings(haproxy_metrics_port=19101), env)
    assert values["RAY_SERVE_HAPROXY_METRICS_PORT"] == "19101"
    assert "RAY_SERVE_HAPROXY_STATS_PORT" not in values  # exported, no setting: kept
    assert inherited == {"haproxy_stats_port": "RAY_SERVE_HAPROXY_STATS_PORT"}
    values, _ = port_env(Settings(haproxy_stats_port=8405), env)
    assert values["RAY_SERVE_HAPROXY_STATS_PORT"] == "8405"  # the setting wins
    assert values["RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT"] == "30000"
    assert values["RAY_SERVE_DIRECT_INGRESS_MAX_GRPC_PORT"] == "41000"
    with pytest.raises(ValueError, match="port range"):
        Settings(replica_http_ports="31000-30000")


def test_a_held_port_is_named_with_the_setting_that_moves_it() -> None:
    import socket

    from serve_app.instance import check_ports, ports_in_use
    from storage.errors import ConfigurationError

    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        env = {"RAY_SERVE_FALLBACK_PROXY_HTTP_PORT": str(port)}
        uses = ports_in_use(Settings(), env)
        with pytest.raises(ConfigurationError) as err:  # only that port: others may be in use
            check_ports(u for u in uses if u.port == port)
    message = str(err.value)
    assert "\n" not in message and str(port) in message
    assert "SQUALL_SERVE_FALLBACK_HTTP_PORT" in message
    assert "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT" in message
