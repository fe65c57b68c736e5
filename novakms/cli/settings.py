"""Where a command's settings come from: the command line, the environment, a TOML file.

A node in an image carries a config file instead of a long argv (``novakms serve --config
FILE``); an operator overrides one value with an environment variable; a developer passes a
flag. This module merges the three, pure (it is handed the file's text and the environment,
and reads nothing itself), with one precedence for every setting:

    command line  >  environment (``NOVAKMS_<NAME>``)  >  config file  >  built-in default

The settings are derived from the command's argparse options, so every option has a file key
and an environment variable and none can be forgotten: the key is the option's long name
without ``--`` (``chain-rpc``), the variable ``NOVAKMS_`` + the name in capitals with ``_`` for
``-`` (``NOVAKMS_CHAIN_RPC``). A repeatable option (``--listen``) is a TOML array and a
comma-separated variable, and a value from a higher source *replaces* the lower one's list.
``--limit NAME=VALUE`` is the exception: the file's ``[limits]`` table, ``NOVAKMS_LIMITS``
(``name=value,name=value``) and the flags are merged *per limit name*, the higher source
winning for a name both set. A flag (``--require-pin``) is a TOML boolean and a variable of
``1/true/yes/on`` or ``0/false/no/off``; a ``--no-…`` form on the command line (argparse's
``BooleanOptionalAction``) turns off what a lower source turned on.

For this to work the parser's options carry no defaults of their own (None, so that "not
given" can be told from "given the default"); the defaults are handed to :func:`resolve`.
"""

from __future__ import annotations

import argparse
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from novakms.config import parse_in_enclave
from novakms.errors import CliError

__all__ = ["ENV_PREFIX", "LIMITS_KEY", "Setting", "parse_file", "resolve", "settings_of"]

ENV_PREFIX = "NOVAKMS_"
LIMITS_KEY = "limits"  # the file table and the variable (NOVAKMS_LIMITS) of --limit

Kind = Literal["text", "list", "flag", "limits"]


@dataclass(frozen=True, slots=True)
class Setting:
    """One option of a command, as a file key and an environment variable.

    Attributes:
        dest: the argparse destination (``chain_rpc``).
        key: the config file key (``chain-rpc``; ``limits`` for ``--limit``).
        env: the environment variable (``NOVAKMS_CHAIN_RPC``).
        kind: ``text`` (one value, converted by ``convert``), ``list`` (repeatable),
            ``flag`` (a boolean) or ``limits`` (``NAME=VALUE`` items merged per name).
        convert: the option's argparse type (None: text as given).
        choices: the values the option accepts, if it restricts them.
        number: the option takes a number (a TOML integer or float, not text).
    """

    dest: str
    key: str
    env: str
    kind: Kind
    convert: Callable[[str], Any] | None = None
    choices: tuple[str, ...] | None = None
    number: bool = False

    def value(self, raw: str, where: str) -> Any:
        """Convert one text value as the command line would, or refuse it naming ``where``."""
        try:
            value = raw if self.convert is None else self.convert(raw)
        except (argparse.ArgumentTypeError, ValueError) as exc:
            raise CliError(f"{where}: {exc or 'invalid value'}") from None
        if self.choices is not None and value not in self.choices:
            raise CliError(f"{where}: {raw!r} is not one of {', '.join(self.choices)}")
        return value


def settings_of(parser: argparse.ArgumentParser, *, skip: Sequence[str] = ()) -> list[Setting]:
    """The settings of every long option of ``parser`` (but ``--help`` and ``skip``).

    Raises:
        ValueError: an option has a default of its own (see the module notes).
    """
    settings = []
    for action in parser._actions:
        longs = [s for s in action.option_strings if s.startswith("--")]
        if not longs or action.dest in ("help", *skip):
            continue
        if action.default not in (None, argparse.SUPPRESS):
            raise ValueError(f"{longs[0]} has a default; give it to resolve() instead")
        name = longs[0][2:]
        kind: Kind
        if isinstance(action, argparse._StoreTrueAction | argparse.BooleanOptionalAction):
            kind = "flag"
        elif isinstance(action, argparse._AppendAction):
            kind = "limits" if action.dest == "limit" else "list"
        else:
            kind = "text"
        key = LIMITS_KEY if kind == "limits" else name
        settings.append(
            Setting(
                dest=action.dest,
                key=key,
                env=ENV_PREFIX + key.upper().replace("-", "_"),
                kind=kind,
                convert=action.type if callable(action.type) else None,
                choices=None if action.choices is None else tuple(action.choices),
                number=action.type in (int, float),
            )
        )
    return settings


def parse_file(text: str, settings: Sequence[Setting], *, name: str) -> dict[str, Any]:
    """The values a TOML config file sets, converted as on the command line.

    Args:
        text: the file's content.
        settings: the command's settings.
        name: the file's name, for the messages.

    Returns:
        ``dest`` → value for every key the file sets (limits as ``NAME=VALUE`` items).

    Raises:
        CliError: not TOML, an unknown key, or a value of the wrong type (naming the key).
    """
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CliError(f"config {name}: not valid TOML ({exc})") from None
    by_key = {s.key: s for s in settings}
    values: dict[str, Any] = {}
    for key, raw in document.items():
        setting = by_key.get(key)
        where = f"config {name}: {key!r}"
        if setting is None:
            known = ", ".join(sorted(by_key))
            raise CliError(f"config {name}: unknown key {key!r} (known keys: {known})")
        values[setting.dest] = _file_value(setting, raw, where)
    return values


def _file_value(setting: Setting, raw: Any, where: str) -> Any:
    if setting.kind == "flag":
        if not isinstance(raw, bool):
            raise CliError(f"{where} must be true or false")
        return raw
    if setting.kind == "limits":
        if not isinstance(raw, dict):
            raise CliError(f"{where} must be a table of limit = value")
        items = []
        for name, value in raw.items():
            if isinstance(value, bool) or not isinstance(value, int | float | str):
                raise CliError(f"{where}: limit {name!r} must be a number or a text")
            items.append(f"{name}={value}")
        return items
    if setting.kind == "list":
        entries = [raw] if isinstance(raw, str) else raw
        if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
            raise CliError(f"{where} must be a text or an array of texts")
        return [setting.value(e, where) for e in entries]
    if setting.number:
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            raise CliError(f"{where} must be a number")
        return setting.value(str(raw), where)
    if not isinstance(raw, str):
        raise CliError(f"{where} must be a text")
    return setting.value(raw, where)


def _env_values(settings: Sequence[Setting], environ: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for setting in settings:
        raw = environ.get(setting.env, "")
        if not raw.strip():
            continue  # unset and empty mean the same: not set
        where = setting.env
        if setting.kind == "flag":
            try:
                values[setting.dest] = parse_in_enclave({"IN_ENCLAVE": raw})
            except ValueError:
                raise CliError(f"{where} must be 1/true/yes/on or 0/false/no/off") from None
        elif setting.kind in ("list", "limits"):
            entries = [e.strip() for e in raw.split(",") if e.strip()]
            values[setting.dest] = (
                entries if setting.kind == "limits" else [setting.value(e, where) for e in entries]
            )
        else:
            values[setting.dest] = setting.value(raw.strip(), where)
    return values


def resolve(
    settings: Sequence[Setting],
    given: Mapping[str, Any],
    *,
    environ: Mapping[str, str],
    file_values: Mapping[str, Any],
    defaults: Mapping[str, Any],
) -> dict[str, Any]:
    """Every setting's value: command line > environment > config file > default.

    Args:
        settings: the command's settings.
        given: what the command line set (``dest`` → value; None for "not given").
        environ: the environment.
        file_values: what the config file set (:func:`parse_file`).
        defaults: the built-in defaults (a missing dest defaults to None; lists to ``[]``).

    Returns:
        ``dest`` → value for every setting.

    Raises:
        CliError: an environment variable with a value its option refuses.
    """
    env_values = _env_values(settings, environ)
    resolved: dict[str, Any] = {}
    for setting in settings:
        layers = [
            defaults.get(setting.dest),
            file_values.get(setting.dest),
            env_values.get(setting.dest),
            given.get(setting.dest),
        ]
        if setting.kind == "limits":
            # Per limit name: later items win (parse_limit_overrides applies them in order).
            resolved[setting.dest] = [item for layer in layers for item in (layer or [])]
            continue
        value = None
        for layer in layers:
            if layer is not None:
                value = layer
        if value is None and setting.kind in ("list",):
            value = []
        if value is None and setting.kind == "flag":
            value = False
        resolved[setting.dest] = value
    return resolved
