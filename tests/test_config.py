"""Tests for storied.config: layered loading, get/set, parsing, logging setup, inheritance."""

from __future__ import annotations

import contextlib
import copy
import datetime
import io
import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

import storied.config as cfg

REPO_ROOT = Path(__file__).resolve().parents[1]


def write_yaml(path: Path, data: object) -> str:
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return str(path)


@pytest.fixture
def no_home_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point HOME at an empty directory so a developer's own storied.yaml can't leak in."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    return home


# --- load -------------------------------------------------------------------------------------


def test_load_without_file_or_env_gives_defaults(no_home_config: Path) -> None:
    assert cfg.load(env={}) == cfg.DEFAULTS


def test_load_returns_a_copy_not_the_defaults(no_home_config: Path) -> None:
    loaded = cfg.load(env={})
    loaded["scheduler"]["worker-ttl"] = "1s"
    assert cfg.DEFAULTS["scheduler"]["worker-ttl"] == "30s"


def test_load_reads_file_named_by_storied_config_and_deep_merges(tmp_path: Path) -> None:
    path = write_yaml(
        tmp_path / "c.yaml", {"scheduler": {"worker-ttl": "10s"}, "comm": {"tls": {"cert": "x"}}}
    )
    loaded = cfg.load(env={"STORIED_CONFIG": path})
    assert loaded["scheduler"]["worker-ttl"] == "10s"
    assert loaded["scheduler"]["allowed-failures"] == 3
    assert loaded["comm"]["tls"] == {"ca-file": None, "cert": "x", "key": None}


def test_load_discovers_file_in_home(no_home_config: Path) -> None:
    config_dir = no_home_config / ".config" / "storied"
    config_dir.mkdir(parents=True)
    write_yaml(config_dir / "storied.yaml", {"worker": {"log-length": 7}})
    assert cfg.load(env={})["worker"]["log-length"] == 7


def test_storied_config_wins_over_home_file(no_home_config: Path, tmp_path: Path) -> None:
    config_dir = no_home_config / ".config" / "storied"
    config_dir.mkdir(parents=True)
    write_yaml(config_dir / "storied.yaml", {"worker": {"log-length": 7}})
    path = write_yaml(tmp_path / "c.yaml", {"worker": {"log-length": 8}})
    assert cfg.load(env={"STORIED_CONFIG": path})["worker"]["log-length"] == 8


def test_explicit_paths_apply_in_order(tmp_path: Path) -> None:
    first = write_yaml(
        tmp_path / "a.yaml", {"worker": {"log-length": 1, "transition-log-length": 2}}
    )
    second = write_yaml(tmp_path / "b.yaml", {"worker": {"log-length": 3}})
    loaded = cfg.load(paths=[first, second], env={})
    worker = loaded["worker"]
    assert (worker["log-length"], worker["transition-log-length"]) == (3, 2)


def test_empty_file_configures_nothing(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("")
    assert cfg.load(env={"STORIED_CONFIG": str(path)}) == cfg.DEFAULTS


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "does not exist"),
        ("- a\n- b\n", "must hold a YAML mapping"),
        ("scheduler: [unclosed\n", "is not valid YAML"),
    ],
)
def test_bad_config_file_is_a_clear_error(
    tmp_path: Path, content: str | None, message: str
) -> None:
    path = tmp_path / "bad.yaml"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ValueError, match=message) as info:
        cfg.load(env={"STORIED_CONFIG": str(path)})
    assert str(path) in str(info.value)


def test_env_overrides_file_and_nests(tmp_path: Path) -> None:
    path = write_yaml(tmp_path / "c.yaml", {"scheduler": {"worker-ttl": "10s"}})
    env = {
        "STORIED_CONFIG": path,
        "STORIED_SCHEDULER__WORKER_TTL": "5s",
        "STORIED_SCHEDULER__ALLOWED_FAILURES": "7",
        "STORIED_SCHEDULER__LEDGER": "null",
        "STORIED_COMM__TLS__CA_FILE": "/etc/ca.pem",
        "STORIED_LEDGER__FLUSH_INTERVAL": "1s",
        "STORIED_AUTH_TOKEN": "not a config key: no section",
        "UNRELATED": "ignored",
    }
    loaded = cfg.load(env=env)
    assert loaded["scheduler"]["worker-ttl"] == "5s"
    assert loaded["scheduler"]["allowed-failures"] == 7
    assert loaded["scheduler"]["ledger"] is None
    assert loaded["comm"]["tls"]["ca-file"] == "/etc/ca.pem"
    assert loaded["comm"]["tls"]["cert"] is None
    assert loaded["ledger"] == {
        "queue-size": 100_000,
        "batch-size": 2_000,
        "flush-interval": "1s",
        "index-interval": "200ms",
    }
    assert loaded.keys() == cfg.DEFAULTS.keys()


def test_env_value_that_is_not_yaml_stays_a_string() -> None:
    loaded = cfg.load(paths=[], env={"STORIED_COMM__AUTH_TOKEN": "abc: def: [x"})
    assert loaded["comm"]["auth-token"] == "abc: def: [x"


def test_env_name_with_empty_part_is_rejected() -> None:
    with pytest.raises(ValueError, match="STORIED_SCHEDULER____TTL"):
        cfg.load(paths=[], env={"STORIED_SCHEDULER____TTL": "1"})


def test_dict_config_logging_in_file_replaces_simple_defaults(tmp_path: Path) -> None:
    section = {"version": 1, "loggers": {"storied": {"level": "DEBUG"}}}
    path = write_yaml(tmp_path / "c.yaml", {"logging": section})
    assert cfg.load(env={"STORIED_CONFIG": path})["logging"] == section


def test_simple_logging_levels_merge_with_defaults(tmp_path: Path) -> None:
    path = write_yaml(tmp_path / "c.yaml", {"logging": {"storied.comm": "debug"}})
    loaded = cfg.load(env={"STORIED_CONFIG": path})
    assert loaded["logging"] == {"storied": "info", "storied.comm": "debug"}


def test_refresh_reloads_module_config_in_place(tmp_path: Path) -> None:
    module_config = cfg.config
    original = copy.deepcopy(module_config)
    path = write_yaml(tmp_path / "c.yaml", {"worker": {"log-length": 5}})
    try:
        cfg.refresh(env={"STORIED_CONFIG": path})
        assert cfg.config is module_config
        assert cfg.get("worker.log-length") == 5
    finally:
        module_config.clear()
        module_config.update(original)


# --- get / set --------------------------------------------------------------------------------


def test_get_reads_dotted_paths_and_defaults() -> None:
    data = {"a": {"b": {"c": 1}}}
    assert cfg.get("a.b.c", config=data) == 1
    assert cfg.get("a.b", config=data) == {"c": 1}
    assert cfg.get("a.x", default=None, config=data) is None
    assert cfg.get("scheduler.allowed-failures") == cfg.config["scheduler"]["allowed-failures"]


def test_get_missing_key_names_path_and_suggests() -> None:
    with pytest.raises(
        KeyError, match=r"scheduler\.worker_ttl.*did you mean 'scheduler\.worker-ttl'"
    ):
        cfg.get("scheduler.worker_ttl")
    with pytest.raises(KeyError, match="is a str, not a section"):
        cfg.get("scheduler.worker-ttl.seconds")


def test_set_overrides_and_restores() -> None:
    before = copy.deepcopy(cfg.config)
    with cfg.set({"scheduler.worker-ttl": "5s", "comm.tls.cert": "c.pem", "new.deep.key": 1}):
        assert cfg.get("scheduler.worker-ttl") == "5s"
        assert cfg.get("comm.tls.cert") == "c.pem"
        assert cfg.get("new.deep.key") == 1
    assert cfg.config == before


def test_set_nested_and_on_error_restores_in_order() -> None:
    before = copy.deepcopy(cfg.config)
    with pytest.raises(RuntimeError), cfg.set({"worker.log-length": 1}):
        with cfg.set({"worker.log-length": 2, "worker": {"replaced": True}}):
            assert cfg.get("worker") == {"replaced": True}
        assert cfg.get("worker.log-length") == 1
        raise RuntimeError("boom")
    assert cfg.config == before


def test_set_through_a_scalar_restores_the_scalar() -> None:
    with cfg.set({"scheduler.worker-ttl.inner": 1}):
        assert cfg.get("scheduler.worker-ttl") == {"inner": 1}
    assert cfg.get("scheduler.worker-ttl") == cfg.DEFAULTS["scheduler"]["worker-ttl"]


def test_set_copies_values() -> None:
    value = {"a": 1}
    with cfg.set({"extra": value}):
        value["a"] = 2
        assert cfg.get("extra.a") == 1


# --- parsing ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "default_unit", "seconds"),
    [
        ("200ms", "s", 0.2),
        ("30s", "s", 30.0),
        ("7d", "s", 604_800.0),
        ("1.5 h", "s", 5_400.0),
        ("2 Minutes", "s", 120.0),
        ("5", "s", 5.0),
        ("5", "ms", 0.005),
        (5, "s", 5.0),
        (0.5, "m", 30.0),
        (datetime.timedelta(minutes=1), "s", 60.0),
        ("10us", "s", 1e-5),
        ("1w", "s", 604_800.0),
    ],
)
def test_parse_timedelta(value: object, default_unit: str, seconds: float) -> None:
    assert cfg.parse_timedelta(value, default_unit) == pytest.approx(seconds)  # type: ignore[arg-type]


def test_parse_timedelta_none_is_none() -> None:
    assert cfg.parse_timedelta(None) is None


@pytest.mark.parametrize(
    ("value", "default_unit", "message"),
    [
        ("5 fortnights", "s", "unknown duration unit 'fortnights' in '5 fortnights'; accepted"),
        ("soon", "s", "cannot read 'soon' as a duration; expected e.g."),
        ("-5s", "s", "'-5s' must be a finite, non-negative"),
        (float("inf"), "s", "must be a finite"),
        (True, "s", r"cannot read True \(bool\) as a duration"),
        (5, "parsecs", "unknown duration unit 'parsecs'"),
    ],
)
def test_parse_timedelta_errors(value: object, default_unit: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        cfg.parse_timedelta(value, default_unit)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "size"),
    [
        ("256MiB", 256 * 2**20),
        ("1 GB", 10**9),
        ("64kB", 64_000),
        ("64 KiB", 65_536),
        ("1.5k", 1_500),
        ("1.15kB", 1_150),
        ("1000", 1_000),
        ("12 B", 12),
        (1000, 1_000),
        (2**60 + 1, 2**60 + 1),
    ],
)
def test_parse_bytes(value: str | int, size: int) -> None:
    assert cfg.parse_bytes(value) == size


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("3 ZB", "unknown size unit 'ZB' in '3 ZB'; accepted"),
        ("lots", "cannot read 'lots' as a size"),
        ("-1kB", "must be a finite, non-negative"),
        (None, r"cannot read None \(NoneType\) as a size"),
    ],
)
def test_parse_bytes_errors(value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        cfg.parse_bytes(value)  # type: ignore[arg-type]


def test_defaults_parse() -> None:
    assert cfg.parse_timedelta(cfg.DEFAULTS["scheduler"]["worker-ttl"]) == 30.0
    assert cfg.parse_timedelta(cfg.DEFAULTS["ledger"]["flush-interval"]) == pytest.approx(0.05)
    assert cfg.parse_bytes(cfg.DEFAULTS["comm"]["max-frame-size"]) == 256 * 2**20


# --- logging ----------------------------------------------------------------------------------


@contextlib.contextmanager
def fresh_logging() -> Iterator[None]:
    """Start from a fresh process's logging state (no root or storied handlers) and put every
    logger back afterwards, closing handlers added meanwhile, so nothing leaks between tests.

    A context manager rather than a fixture: pytest adds its capture handlers to the root
    logger for the test call itself, after fixtures have run.
    """
    saved = {logger: _logger_state(logger) for logger in _all_loggers()}
    for name in ("", "storied"):
        logging.getLogger(name).handlers.clear()
    try:
        yield
    finally:
        for logger in _all_loggers():
            handlers, level, propagate, disabled = saved.get(
                logger, ([], logging.NOTSET, True, False)
            )
            for handler in logger.handlers:
                if handler not in handlers:
                    handler.close()
            logger.handlers[:] = handlers
            logger.setLevel(level)
            logger.propagate = propagate
            logger.disabled = disabled


def _all_loggers() -> list[logging.Logger]:
    registered = logging.Logger.manager.loggerDict.values()
    return [logging.getLogger(), *(x for x in registered if isinstance(x, logging.Logger))]


def _logger_state(logger: logging.Logger) -> tuple[list[logging.Handler], int, bool, bool]:
    return list(logger.handlers), logger.level, logger.propagate, logger.disabled


def simple_logging(**levels: str) -> dict[str, dict[str, str]]:
    return {"logging": {name.replace("_", "."): level for name, level in levels.items()}}


def test_simple_form_sets_levels_and_one_stderr_handler(capsys: pytest.CaptureFixture[str]) -> None:
    with fresh_logging():
        cfg.configure_logging(simple_logging(storied="debug", storied_comm="warning"))
        cfg.configure_logging(simple_logging(storied="debug", storied_comm="warning"))
        storied_logger = logging.getLogger("storied")
        assert storied_logger.level == logging.DEBUG
        assert logging.getLogger("storied.comm").level == logging.WARNING
        assert len(storied_logger.handlers) == 1

        logging.getLogger("storied.scheduler").debug("hello %s", "there")
        logging.getLogger("storied.comm").info("filtered out")
        lines = capsys.readouterr().err.splitlines()
        assert len(lines) == 1
        assert lines[0].endswith(" - storied.scheduler - DEBUG - hello there")


def test_basic_config_is_respected() -> None:
    with fresh_logging():
        stream = io.StringIO()
        logging.basicConfig(stream=stream, format="%(name)s:%(message)s")
        cfg.configure_logging(simple_logging(storied="info"))
        assert logging.getLogger("storied").handlers == []
        logging.getLogger("storied.worker").info("once")
        assert stream.getvalue() == "storied.worker:once\n"


def test_basic_config_after_setup_prints_once(capsys: pytest.CaptureFixture[str]) -> None:
    with fresh_logging():
        cfg.configure_logging(simple_logging(storied="info"))
        stream = io.StringIO()
        logging.basicConfig(stream=stream, format="%(message)s")
        logging.getLogger("storied.worker").info("only theirs")
        assert stream.getvalue() == "only theirs\n"
        assert capsys.readouterr().err == ""


def test_bad_level_is_a_clear_error_and_applies_nothing() -> None:
    bad = {"logging": {"storied.comm": "debug", "storied": "loud"}}
    with fresh_logging():
        with pytest.raises(
            ValueError, match=r"logging\.storied: unknown log level 'loud'; accepted"
        ):
            cfg.configure_logging(bad)
        assert logging.getLogger("storied.comm").level == logging.NOTSET
        assert logging.getLogger("storied").handlers == []


def test_dict_config_form_with_file_handler(tmp_path: Path) -> None:
    with fresh_logging():
        elsewhere = logging.getLogger("storied.elsewhere")  # exists; not in the dictConfig
        cfg.configure_logging(simple_logging(storied="info"))  # a default handler to be replaced
        log_file = tmp_path / "out.log"
        section = {
            "version": 1,
            "formatters": {"plain": {"format": "%(name)s|%(levelname)s|%(message)s"}},
            "handlers": {
                "file": {
                    "class": "logging.FileHandler",
                    "filename": str(log_file),
                    "formatter": "plain",
                }
            },
            "loggers": {
                "storied.test": {"level": "DEBUG", "handlers": ["file"], "propagate": False}
            },
        }
        cfg.configure_logging({"logging": section})
        cfg.configure_logging({"logging": section})
        assert logging.getLogger("storied").handlers == []
        assert not elsewhere.disabled
        logging.getLogger("storied.test.child").debug("kept")
        handlers = logging.getLogger("storied.test").handlers
        assert len(handlers) == 1
        handlers[0].flush()
        assert log_file.read_text() == "storied.test.child|DEBUG|kept\n"


# --- inheriting config in child processes ------------------------------------------------------


def test_serialize_round_trip() -> None:
    data = {"scheduler": {"worker-ttl": "5s", "ledger": None}, "x": [1, 2.5, True]}
    text = cfg.serialize_for_env(data)
    assert text.isascii() and "\n" not in text
    assert cfg.deserialize_from_env(text) == data


def test_serialize_rejects_unserializable_values() -> None:
    with pytest.raises(ValueError, match="cannot be passed to a subprocess"):
        cfg.serialize_for_env({"x": object()})


def test_deserialize_rejects_mangled_text() -> None:
    with pytest.raises(ValueError, match="STORIED_INTERNAL_INHERIT_CONFIG does not hold"):
        cfg.deserialize_from_env("not base64!")


def test_inherited_config_sits_between_file_and_env(tmp_path: Path) -> None:
    path = write_yaml(
        tmp_path / "c.yaml", {"worker": {"log-length": 1, "transition-log-length": 1}}
    )
    inherited = {"worker": {"log-length": 2, "transition-log-length": 2}}
    env = {
        "STORIED_CONFIG": path,
        cfg.INHERIT_ENV_VAR: cfg.serialize_for_env(inherited),
        "STORIED_WORKER__LOG_LENGTH": "3",
    }
    worker = cfg.load(env=env)["worker"]
    assert (worker["log-length"], worker["transition-log-length"]) == (3, 2)


def test_environ_for_subprocess_carries_set_overrides(tmp_path: Path) -> None:
    parent_env = {
        "PATH": "/bin",
        "STORIED_AUTH_TOKEN": "kept: not a config variable",
        "STORIED_CONFIG": str(tmp_path / "deleted-since-the-parent-started.yaml"),
        "STORIED_SCHEDULER__WORKER_TTL": "10s",
    }
    with cfg.set({"scheduler.worker-ttl": "5s"}):
        child_env = cfg.environ_for_subprocess(base=parent_env)
        expected = copy.deepcopy(cfg.config)
    assert child_env.keys() == {"PATH", "STORIED_AUTH_TOKEN", cfg.INHERIT_ENV_VAR}
    assert cfg.load(env=child_env) == expected


def run_python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        env={**env, "PYTHONPATH": str(REPO_ROOT)},
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def clean_environ() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("STORIED_")}


def test_subprocess_honours_dict_config_from_storied_config(tmp_path: Path) -> None:
    log_file = tmp_path / "worker.log"
    config_file = tmp_path / "storied.yaml"
    config_file.write_text(
        textwrap.dedent(
            f"""\
            logging:
              version: 1
              formatters:
                plain: {{format: "%(name)s|%(levelname)s|%(message)s"}}
              handlers:
                file: {{class: logging.FileHandler, filename: {str(log_file)!r}, formatter: plain}}
              loggers:
                storied: {{level: DEBUG, handlers: [file]}}
            """
        )
    )
    code = (
        "import storied.config as c, logging; c.configure_logging(); "
        "logging.getLogger('storied.worker').debug('hello from %s', 'worker')"
    )
    result = run_python(code, {**clean_environ(), "STORIED_CONFIG": str(config_file)})
    assert result.returncode == 0, result.stderr
    assert log_file.read_text() == "storied.worker|DEBUG|hello from worker\n"


def test_subprocess_inherits_in_memory_config() -> None:
    with cfg.set({"worker.log-length": 42, "logging.storied": "debug"}):
        env = cfg.environ_for_subprocess(base=clean_environ())
    code = (
        "import storied.config as c, logging; c.configure_logging(); "
        "logging.getLogger('storied.worker').debug('log-length=%s', c.get('worker.log-length'))"
    )
    result = run_python(code, env)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip().endswith(" - storied.worker - DEBUG - log-length=42")
