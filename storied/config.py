"""Configuration for storied's scheduler, workers, client and CLI, and the logging setup.

Layers, lowest first: ``DEFAULTS`` <- YAML file <- config inherited from a parent process
<- ``STORIED_*`` environment variables. Keys are nested; ``get("scheduler.worker-ttl")`` reads
one and ``set({...})`` overrides some for a while. This module depends on the stdlib and pyyaml
only, so every other part of storied can import it first.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import datetime
import difflib
import json
import logging
import logging.config
import math
import os
import re
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from storied.loglevels import BadLevel, parse_level

__all__ = [
    "CONFIG_FILE_ENV_VAR",
    "DEFAULTS",
    "INHERIT_ENV_VAR",
    "LOG_FORMAT",
    "config",
    "configure_logging",
    "default_config_path",
    "deserialize_from_env",
    "environ_for_subprocess",
    "get",
    "load",
    "parse_bytes",
    "parse_timedelta",
    "refresh",
    "serialize_for_env",
    "set",
    "silence_console",
]

ENV_PREFIX = "STORIED_"
CONFIG_FILE_ENV_VAR = "STORIED_CONFIG"
INHERIT_ENV_VAR = "STORIED_INTERNAL_INHERIT_CONFIG"
LOG_FORMAT = "%(asctime)s - %(name)s - %(levelname)s - %(message)s"

DEFAULTS: dict[str, Any] = {
    "logging": {"storied": "info"},
    "scheduler": {
        "record-transitions": True,
        "transition-log-length": 100_000,
        "events-per-topic": 100_000,
        "log-length": 10_000,
        "execution-log-length": 100_000,
        # resource samples (one a heartbeat) kept in memory per worker: an hour at 1s
        "worker-metrics-length": 3_600,
        "worker-ttl": "30s",
        "worker-reply-timeout": "5s",
        "allowed-failures": 3,
        # tasks per worker thread sent at once; the rest of the root tasks queue ("inf": none)
        "worker-saturation": 1.1,
        # ... and as many more as a thread runs in this time, so short tasks need no round trips
        "worker-backlog": "10ms",
        # an awaited result standing for this much compute gets a second copy on another worker,
        # so a worker's death does not take the work with it (null: never, as in Dask)
        "safeguard-lineage": "500ms",
        # move tasks not started from busy workers to idle ones, checked this often
        "work-stealing": True,
        "work-stealing-interval": "100ms",
        "client-grace": "10s",
        "ledger": None,
        "retain": None,
    },
    "worker": {
        "record-transitions": True,
        "transition-log-length": 100_000,
        "log-length": 10_000,
        # keep what tasks log (any logger) and print, tagged with the task's key
        "capture-task-logs": False,
        # ready tasks handed to the executor beyond its threads: a thread that finishes a task
        # starts the next without waiting for the event loop to hand it over
        "executor-lookahead": 2,
        "heartbeat-interval": "1s",
        # sample CPU, memory, connections and bytes moved with every heartbeat (``storied top``)
        "telemetry": True,
        "resources": None,
        "local-directory": None,
        # hand large results to processes of this host through /dev/shm (docs/wire.md): true,
        # false or "auto" (where /dev/shm is a tmpfs with room for the pool and results)
        "shared-memory": "auto",
        # ... each out-of-band buffer of at least this size
        "shared-memory-threshold": "1MiB",
        # ... and at most this many bytes of segments per worker (None: what /dev/shm has free)
        "shared-memory-limit": None,
        # ... of which up to this many bytes of released results' segments are kept for the
        # next results (faulted in already: copied into at memcpy speed)
        "shared-memory-pool": "512MiB",
        "memory": {
            "target": 0.6,
            "spill": 0.7,
            "pause": 0.8,
            "terminate": 0.95,
            "monitor-interval": "100ms",
        },
    },
    "nanny": {
        "restart-backoff": "100ms",
        "restart-backoff-max": "30s",
        "close-timeout": "10s",
    },
    "comm": {
        "connect-timeout": "10s",
        "reconnect-timeout": "60s",
        "handshake-timeout": "10s",
        "max-unauthenticated": 256,
        "max-frame-size": "256MiB",
        # large data between hosts: false (off, as Dask), "auto" (lz4 if installed), "lz4", "zlib"
        "compression": False,
        "auth-token": None,
        "tls": {"ca-file": None, "cert": None, "key": None},
    },
    "coordination": {
        # a semaphore or lock lease not refreshed by its holder this long is freed ("inf": never)
        "lease-timeout": "30s",
        "lease-validation-interval": "10s",
    },
    "events": {
        "max-bytes-per-topic": "64MiB",
        "max-event-size": "1MiB",
        "page-size": 1_000,
        "page-bytes": "8MiB",
    },
    "ledger": {
        "queue-size": 100_000,
        "batch-size": 2_000,
        "flush-interval": "50ms",
        "index-interval": "200ms",
    },
}


# ---------------------------------------------------------------------------------------------
# Loading


def default_config_path() -> Path:
    """The file read when ``$STORIED_CONFIG`` is unset (and only if it exists)."""
    return Path.home() / ".config" / "storied" / "storied.yaml"


def load(paths: list[str] | None = None, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Build a fresh config: defaults <- YAML file(s) <- inherited config <- environment.

    ``paths`` replaces file discovery (each must exist). Otherwise the file is
    ``$STORIED_CONFIG`` if set (it must exist), else ``default_config_path()`` if present.
    ``env`` defaults to ``os.environ``; passing it keeps tests away from the real environment.
    """
    env = os.environ if env is None else env
    result = copy.deepcopy(DEFAULTS)
    for path in _config_files(paths, env):
        _merge_layer(result, _read_yaml_mapping(path))
    if INHERIT_ENV_VAR in env:
        _merge_layer(result, deserialize_from_env(env[INHERIT_ENV_VAR]))
    _merge_layer(result, _config_from_env(env))
    return result


def refresh(paths: list[str] | None = None, env: Mapping[str, str] | None = None) -> None:
    """Reload the module-level ``config`` in place, e.g. after the CLI learns a config file."""
    with _lock:
        fresh = load(paths, env)
        config.clear()
        config.update(fresh)


def _config_files(paths: list[str] | None, env: Mapping[str, str]) -> list[Path]:
    if paths is not None:
        return [Path(p).expanduser() for p in paths]
    if CONFIG_FILE_ENV_VAR in env:
        return [Path(env[CONFIG_FILE_ENV_VAR]).expanduser()]
    discovered = default_config_path()
    return [discovered] if discovered.is_file() else []


def _read_yaml_mapping(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ValueError(
            f"storied config file {str(path)!r} does not exist or is not a file "
            f"(check ${CONFIG_FILE_ENV_VAR} or the path you passed)"
        )
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ValueError(f"storied config file {str(path)!r} is not valid YAML: {exc}") from exc
    if data is None:  # an empty file configures nothing
        return {}
    if not isinstance(data, dict):
        raise ValueError(
            f"storied config file {str(path)!r} must hold a YAML mapping "
            f"(e.g. 'scheduler: {{worker-ttl: 10s}}'), not a {type(data).__name__}"
        )
    return data


def _config_from_env(env: Mapping[str, str]) -> dict[str, Any]:
    """``STORIED_SCHEDULER__WORKER_TTL=10s`` -> ``{"scheduler": {"worker-ttl": "10s"}}``."""
    result: dict[str, Any] = {}
    for name, raw in env.items():
        if not _is_config_env_var(name):
            continue
        parts = [part.lower().replace("_", "-") for part in name[len(ENV_PREFIX) :].split("__")]
        if not all(parts):
            raise ValueError(
                f"environment variable {name!r} has an empty key part; "
                f"use STORIED_SECTION__KEY, e.g. STORIED_SCHEDULER__WORKER_TTL=10s"
            )
        _assign(result, parts, _parse_env_value(raw))
    return result


def _is_config_env_var(name: str) -> bool:
    """Every key lives in a section, so config variables have a ``__``; other ``STORIED_*``
    variables (``STORIED_CONFIG``, ``STORIED_INTERNAL_INHERIT_CONFIG``, ...) are not config."""
    return name.startswith(ENV_PREFIX) and "__" in name


def _parse_env_value(raw: str) -> Any:
    """YAML-parse so numbers and ``null`` work; text YAML can't read stays a plain string."""
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw


def _merge_layer(base: dict[str, Any], layer: Mapping[str, Any]) -> None:
    """Deep-merge ``layer`` into ``base``, except that a dictConfig-form ``logging`` section
    replaces the one below it: mixing simple levels into a dictConfig would make it invalid."""
    logging_section = layer.get("logging")
    if _is_dict_config(logging_section):
        base["logging"] = copy.deepcopy(logging_section)
        layer = {k: v for k, v in layer.items() if k != "logging"}
    _deep_merge(base, layer)


def _deep_merge(base: dict[str, Any], update: Mapping[str, Any]) -> None:
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _deep_merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)


def _assign(target: dict[str, Any], parts: list[str], value: Any) -> None:
    for part in parts[:-1]:
        child = target.get(part)
        if not isinstance(child, dict):
            child = target[part] = {}
        target = child
    target[parts[-1]] = value


# ---------------------------------------------------------------------------------------------
# Reading and overriding

_MISSING: Any = object()
_lock = threading.RLock()


def _module_config() -> dict[str, Any]:
    """The module-level ``config``, for functions whose ``config`` parameter shadows it."""
    return config


def get(path: str, default: Any = _MISSING, config: Mapping[str, Any] | None = None) -> Any:
    """Read a dotted key, e.g. ``get("scheduler.worker-ttl")``, from ``config`` (default: the
    module-level one). Raises KeyError naming the path when it is missing and no default given.
    """
    node: Any = _module_config() if config is None else config
    walked: list[str] = []
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            if default is not _MISSING:
                return default
            raise KeyError(_missing_key_message(path, walked, part, node))
        walked.append(part)
        node = node[part]
    return node


def _missing_key_message(path: str, walked: list[str], part: str, node: Any) -> str:
    where = ".".join(walked) or "the top level"
    if not isinstance(node, Mapping):
        return f"config key {path!r}: {where!r} is a {type(node).__name__}, not a section"
    message = f"config key {path!r} not found: no {part!r} in {where}"
    close = difflib.get_close_matches(part, [str(k) for k in node], n=1)
    if close:
        message += f" (did you mean {'.'.join([*walked, close[0]])!r}?)"
    return message


class _Override(contextlib.AbstractContextManager["_Override"]):
    """Applied on creation; undone on ``__exit__``. Nest overrides last-in, first-out."""

    def __init__(self, values: Mapping[str, Any], target: dict[str, Any]) -> None:
        self._target = target
        # (path, whether it existed, previous value) in application order; undone in reverse
        self._undo: list[tuple[list[str], bool, Any]] = []
        with _lock:
            for dotted, value in values.items():
                self._apply(dotted.split("."), copy.deepcopy(value))

    def _apply(self, parts: list[str], value: Any) -> None:
        node = self._target
        for depth, part in enumerate(parts[:-1]):
            if not isinstance(node.get(part), dict):
                # missing or not a section: replace it with a new section holding the value
                self._remember(parts[: depth + 1], node)
                _assign(node, parts[depth:], value)
                return
            node = node[part]
        self._remember(parts, node)
        node[parts[-1]] = value

    def _remember(self, path: list[str], parent: dict[str, Any]) -> None:
        self._undo.append((path, path[-1] in parent, parent.get(path[-1])))

    def __exit__(self, *exc_info: object) -> None:
        with _lock:
            for path, existed, previous in reversed(self._undo):
                parent = self._target
                for part in path[:-1]:
                    parent = parent[part]
                if existed:
                    parent[path[-1]] = previous
                else:
                    del parent[path[-1]]
            self._undo.clear()


def set(values: Mapping[str, Any]) -> contextlib.AbstractContextManager[Any]:
    """Override config values, keyed by dotted path: ``set({"scheduler.worker-ttl": "5s"})``.

    Takes effect at once; used as ``with set(...):`` the previous values (and absence) come
    back on exit. Each value replaces what is at its path; it is not merged into it.
    """
    return _Override(values, config)


# ---------------------------------------------------------------------------------------------
# Parsing durations and sizes

_NUMBER_WITH_UNIT = re.compile(r"^\s*([+-]?(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?)\s*(\S*)\s*$", re.I)

_SECONDS_PER_UNIT: dict[str, float] = {}
for _names, _seconds in (
    (("ns", "nanosecond", "nanoseconds"), 1e-9),
    (("us", "µs", "microsecond", "microseconds"), 1e-6),
    (("ms", "millisecond", "milliseconds"), 1e-3),
    (("s", "sec", "secs", "second", "seconds"), 1.0),
    (("m", "min", "mins", "minute", "minutes"), 60.0),
    (("h", "hr", "hour", "hours"), 3600.0),
    (("d", "day", "days"), 86400.0),
    (("w", "week", "weeks"), 604800.0),
):
    _SECONDS_PER_UNIT.update(dict.fromkeys(_names, _seconds))

_BYTES_PER_UNIT: dict[str, int] = {"b": 1}
for _power, _prefix in enumerate("kmgtp", start=1):
    _BYTES_PER_UNIT.update(dict.fromkeys((_prefix, _prefix + "b"), 1000**_power))
    _BYTES_PER_UNIT.update(dict.fromkeys((_prefix + "i", _prefix + "ib"), 1024**_power))


def parse_timedelta(
    value: str | float | datetime.timedelta | None, default_unit: str = "s"
) -> float | None:
    """Seconds from ``"200ms"``, ``"30s"``, ``"7d"``, a bare number (in ``default_unit``) or a
    timedelta. ``None`` stays ``None``: config uses null for "no limit" / "disabled"."""
    if value is None:
        return None
    if isinstance(value, datetime.timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = value * _unit_factor(default_unit, _SECONDS_PER_UNIT, "duration")
    elif isinstance(value, str):
        number, unit = _split_number_and_unit(value, "duration", "'200ms', '30s', '5m', '7d'")
        seconds = number * _unit_factor(unit or default_unit, _SECONDS_PER_UNIT, "duration", value)
    else:
        raise ValueError(
            f"cannot read {value!r} ({type(value).__name__}) as a duration; "
            f"use a number of seconds or a string like '200ms', '30s', '7d'"
        )
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"duration {value!r} must be a finite, non-negative amount of time")
    return float(seconds)


def parse_bytes(value: str | int | float) -> int:
    """Bytes from ``"256MiB"``, ``"1 GB"``, ``"64kB"`` or a plain number. Decimal prefixes
    (kB, MB, GB...) are powers of 1000, binary ones (KiB, MiB, GiB...) powers of 1024."""
    size: int | float
    if isinstance(value, int | float) and not isinstance(value, bool):
        size = value
    elif isinstance(value, str):
        number, unit = _split_number_and_unit(value, "size", "'1000', '64kB', '256MiB', '1 GB'")
        size = number * _unit_factor(unit or "b", _BYTES_PER_UNIT, "size", value)
    else:
        raise ValueError(
            f"cannot read {value!r} ({type(value).__name__}) as a size; "
            f"use a number of bytes or a string like '64kB', '256MiB', '1 GB'"
        )
    if not math.isfinite(size) or size < 0:
        raise ValueError(f"size {value!r} must be a finite, non-negative number of bytes")
    return round(size)


def _split_number_and_unit(text: str, what: str, examples: str) -> tuple[float, str]:
    match = _NUMBER_WITH_UNIT.match(text)
    if match is None:
        raise ValueError(f"cannot read {text!r} as a {what}; expected e.g. {examples}")
    return float(match.group(1)), match.group(2)


def _unit_factor(unit: str, units: Mapping[str, float], what: str, value: str = "") -> float:
    try:
        return units[unit.lower()]
    except KeyError:
        where = f" in {value!r}" if value else ""
        raise ValueError(
            f"unknown {what} unit {unit!r}{where}; accepted (any case): {', '.join(units)}"
        ) from None


# ---------------------------------------------------------------------------------------------
# Logging


class _DefaultStreamHandler(logging.StreamHandler):
    """storied's own stderr handler, used only while nobody has configured logging.

    It stays on the "storied" logger but goes quiet as soon as the root logger has handlers
    (``logging.basicConfig``, pytest's caplog, ...). Records keep propagating, so the user's
    handlers see every storied record and nothing is printed twice.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not logging.getLogger().handlers and bool(super().filter(record))


def configure_logging(config: Mapping[str, Any] | None = None) -> None:
    """Apply ``config["logging"]`` (default: the module-level config). Safe to call repeatedly.

    Simple form, ``{logger name: level}``: set those levels, and give the "storied" logger a
    stderr handler unless it or the root logger already has one. dictConfig form (has a
    ``version`` key): hand it to ``logging.config.dictConfig``, keeping existing loggers enabled
    unless it says otherwise.
    """
    source = _module_config() if config is None else config
    section = source.get("logging") or {}
    if not isinstance(section, Mapping):
        raise ValueError(
            f"config 'logging' must be a mapping of logger name -> level, or a "
            f"logging.config.dictConfig dict with 'version: 1'; got {section!r}"
        )
    storied_logger = logging.getLogger("storied")
    if _is_dict_config(section):
        for handler in _default_handlers(storied_logger):
            storied_logger.removeHandler(handler)
        logging.config.dictConfig({"disable_existing_loggers": False, **section})
        return
    levels = {str(name): _parse_level(name, level) for name, level in section.items()}
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
    if not storied_logger.handlers and not logging.getLogger().handlers:
        handler = _DefaultStreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        storied_logger.addHandler(handler)
        # the handler steps aside once root has handlers, so records must reach root
        storied_logger.propagate = True


def silence_console(level: int | str) -> None:
    """Show only records at ``level`` or above on storied's own stderr handler.

    LocalCluster uses this (its ``silence_logs``) for the scheduler and workers it starts: the
    console stays quiet while every record still reaches the in-memory log capture and ledger.
    """
    numeric = _parse_level("silence_logs", level)
    for handler in _default_handlers(logging.getLogger("storied")):
        handler.setLevel(max(handler.level, numeric))


def _default_handlers(logger: logging.Logger) -> list[logging.Handler]:
    return [h for h in logger.handlers if isinstance(h, _DefaultStreamHandler)]


def _is_dict_config(section: object) -> bool:
    return isinstance(section, Mapping) and "version" in section


def _parse_level(name: object, level: object) -> int:
    try:
        return parse_level(level)  # type: ignore[arg-type]  # anything else is refused
    except BadLevel as error:
        raise ValueError(f"config logging.{name}: {error}") from None


# ---------------------------------------------------------------------------------------------
# Handing the config to child processes


def serialize_for_env(config: Mapping[str, Any]) -> str:
    """Encode a config for ``$STORIED_INTERNAL_INHERIT_CONFIG`` (base64 of JSON: env-safe)."""
    try:
        text = json.dumps(config, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"config cannot be passed to a subprocess: {exc}; use plain values "
            f"(str, int, float, bool, None, list, dict with str keys)"
        ) from exc
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def deserialize_from_env(text: str) -> dict[str, Any]:
    """Inverse of ``serialize_for_env``; a clear ValueError if the text was mangled."""
    try:
        data = json.loads(base64.b64decode(text.encode("ascii"), validate=True))
    except (ValueError, UnicodeError) as exc:
        raise ValueError(
            f"${INHERIT_ENV_VAR} does not hold a serialized storied config: {exc}"
        ) from exc
    if not isinstance(data, dict):
        raise ValueError(f"${INHERIT_ENV_VAR} must hold a mapping, not {type(data).__name__}")
    return data


def environ_for_subprocess(
    config: Mapping[str, Any] | None = None, base: Mapping[str, str] | None = None
) -> dict[str, str]:
    """An environment for a child process that will ``load()`` exactly ``config``.

    Copies ``base`` (default ``os.environ``) minus ``$STORIED_CONFIG`` and the
    ``STORIED_<SECTION>__<KEY>`` variables: they are already folded into ``config``, and would
    otherwise re-override ``set()`` overrides in the child.
    """
    source = _module_config() if config is None else config
    base = os.environ if base is None else base
    environ = {
        name: value
        for name, value in base.items()
        if name != CONFIG_FILE_ENV_VAR and not _is_config_env_var(name)
    }
    environ[INHERIT_ENV_VAR] = serialize_for_env(source)
    return environ


config: dict[str, Any] = load()
