"""Stage configurations: dataclasses with defaults, settable from a YAML/JSON file and from the command line.

Each stage defines one dataclass (``TileConfig``, ``TrainConfig``, ...). Its fields are the single source of
truth for defaults, command-line options (``--field-name``) and help text (``field(metadata={"help": ...})``),
so the CLI, config files and the library can never disagree. Precedence: defaults < config file < CLI flags.

Values are checked strictly wherever they come from: an integer option takes only whole numbers (``steps: 2.7``
is refused, not truncated), a float option only finite numbers (``--mpp inf`` is refused), and neither takes a
boolean. A value no run could use is a ``ConfigError`` naming the option's full flag: a section's option
(``classifier.batch_size``) is ``--classifier-batch-size`` in every message, wherever its value came from.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import types
import typing
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from .errors import ConfigError

C = TypeVar("C")


def option(default: Any, help: str, **kwargs: Any) -> Any:
    """A dataclass field with help text for ``--help``; lists, dicts and nested configs get a default factory.

    A nested config (a dataclass instance as default) is a section: another stage's whole config held by this
    one, settable as a mapping in a config file and as ``--section-field`` flags. ``choices`` (a tuple, or a
    ``Registry`` whose names are the choices) are listed in ``--help`` and checked by :func:`check_choices`.
    """
    if dataclasses.is_dataclass(default):
        return dataclasses.field(default_factory=lambda: copy.deepcopy(default), metadata={"help": help, **kwargs})
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata={"help": help, **kwargs})
    return dataclasses.field(default=default, metadata={"help": help, **kwargs})


def flag(name: str) -> str:
    """The command-line flag of option ``name``: ``batch_size`` is ``--batch-size``, and the option of a section
    ``classifier.batch_size`` is ``--classifier-batch-size``."""
    return "--" + name.replace("_", "-").replace(".", "-")


@contextmanager
def section_errors(name: str) -> Iterator[None]:
    """Within: a ``ConfigError`` naming an option's flag names it as an option of section ``name``.

    A config's checks name the flags of its own options (``--steps``) without knowing where the config is held;
    as section ``classifier`` of another config the same option is ``--classifier-steps``.
    """
    try:
        yield
    except ConfigError as error:
        if not (error.source or "").startswith("--"):
            raise
        raise type(error)(flag(f"{name}.{error.source[2:]}"), error.problem) from None


def check_choices(config: Any) -> None:
    """Refuse a value outside its option's ``choices``, naming the option's flag and the valid values.

    The one check of every option with choices (a registry's, too): each config's ``validate`` starts with it.
    """
    for spec in dataclasses.fields(config):
        choices, value = spec.metadata.get("choices"), getattr(config, spec.name)
        if choices is None or value is None:
            continue
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if item not in choices:
                raise ConfigError(flag(spec.name), f"{item!r} is not one of {', '.join(map(str, choices))}")


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _base_type(annotation: Any) -> tuple[Any, bool]:
    """(element type, is_list) for an annotation like ``int``, ``float | None`` or ``list[str]``."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _base_type(args[0])
    if origin in (list, tuple):
        return typing.get_args(annotation)[0], True
    return annotation, False


def _parse_bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def add_config_arguments(parser: argparse.ArgumentParser, cls: type, *, skip: tuple[str, ...] = (),
                         prefix: str = "", defaults: Any = None) -> None:
    """Add one ``--field-name`` option per dataclass field; unset options stay ``None`` (= not given).

    A nested section (a dataclass-typed field) adds its own fields as ``--section-field`` (destination
    ``section.field``), in a group of its own, with the defaults the section has there (``defaults``).
    """
    hints = _field_types(cls)
    where = f"section {prefix.rstrip('.')!r}, " if prefix else ""
    group = parser.add_argument_group(f"{cls.__name__} options ({where}also settable in --config)")
    for spec in dataclasses.fields(cls):
        if spec.name in skip:
            continue
        kind, is_list = _base_type(hints[spec.name])
        if dataclasses.is_dataclass(kind):
            add_config_arguments(parser, kind, prefix=f"{prefix}{spec.name}.", defaults=_field_default(spec))
            continue
        default = getattr(defaults, spec.name) if defaults is not None else _field_default(spec)
        help_text = f"{spec.metadata.get('help', '')} (default: {default})"
        if "choices" in spec.metadata:
            help_text += f"; one of {', '.join(map(str, spec.metadata['choices']))}"
        parse = _parse_bool if kind is bool else kind
        action = group.add_argument(flag(prefix + spec.name), dest=prefix + spec.name, type=parse,
                                    nargs="+" if is_list else None, default=None, metavar=spec.name.upper(),
                                    help=help_text)
        action.config_default = default  # type: ignore[attr-defined]  # the real default, for synopses
        action.config_choices = spec.metadata.get("choices")  # type: ignore[attr-defined]


def _field_default(spec: dataclasses.Field) -> Any:
    return spec.default if spec.default is not dataclasses.MISSING else spec.default_factory()  # type: ignore[misc]


def build_section(owner: type, name: str, value: dict[str, Any], source: str | Path = "config",
                  flags: Collection[str] = ()) -> Any:
    """The nested section ``name`` of config class ``owner`` from a mapping of some of its options.

    Options not given keep the section's default *in the owner* (an evaluation's generator trains 5,000 steps
    by default, a plain ``bioaug train`` 20,000), not the section class's own defaults. ``flags`` names the
    section's options given as command-line flags (see :func:`build_config`).
    """
    spec = {field.name: field for field in dataclasses.fields(owner)}[name]  # type: ignore[arg-type]
    kind = _base_type(_field_types(owner)[name])[0]
    default, plain = _field_default(spec), kind()
    differs = {key: val for key, val in dataclasses.asdict(default).items() if val != getattr(plain, key)}
    with section_errors(name):
        return build_config(kind, {**differs, **value}, source=f"{source} section {name!r}", flags=flags)


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON mapping of option names to values."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(path, f"cannot read config ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(path, f"config is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset "
                                f"{exc.start})") from None
    try:
        value = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(path, f"not valid {'JSON' if path.suffix == '.json' else 'YAML'} "
                                f"({str(exc).splitlines()[0]})") from None
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(path, "config must be a mapping of option names to values")
    return value


def _coerce(kind: Any, value: Any) -> Any:
    """``value`` as ``kind``, strictly: whole numbers only for int, finite numbers only for float.

    Raises ``ValueError`` with the reason for anything else (``int(2.7)`` would silently give 2).
    """
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str):
            return _parse_bool(value)
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise ValueError("is not true or false")
    if kind in (int, float) and isinstance(value, bool):
        raise ValueError(f"is not a{'n integer' if kind is int else ' number'}")
    if kind is int:
        number = float(value) if isinstance(value, float) else None
        if number is not None:
            if not number.is_integer():
                raise ValueError("is not a whole number")
            return int(number)
        return int(value)
    if kind is float:
        number = float(value)
        if not math.isfinite(number):
            raise ValueError("is not a finite number")
        return number
    return kind(value)


def build_config(cls: type[C], values: dict[str, Any], source: str | Path = "config",
                 flags: Collection[str] = ()) -> C:
    """Instantiate ``cls`` from a mapping, rejecting unknown keys and values of the wrong type or choice.

    A value of the wrong type is blamed on its flag when its key is in ``flags`` (the options given on the
    command line; ``section.option`` for a section's), else on ``source`` (a file); the config's ``validate``
    then names the flag of any option it refuses.
    """
    hints = _field_types(cls)
    names = {spec.name: spec for spec in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ConfigError(source, f"unknown option {unknown[0]!r}; valid: {', '.join(sorted(names))}")
    clean: dict[str, Any] = {}
    for key, value in values.items():
        kind, is_list = _base_type(hints[key])
        origin = flag(key) if key in flags else source
        if dataclasses.is_dataclass(kind):
            if isinstance(value, kind):
                clean[key] = value
            elif isinstance(value, dict):
                inner = [name[len(key) + 1:] for name in flags if name.startswith(key + ".")]
                clean[key] = build_section(cls, key, value, source=source, flags=inner)
            else:
                raise ConfigError(origin, f"section {key!r} must be a mapping of option names to values")
            continue
        try:
            if value is None:
                clean[key] = None
            elif is_list:
                items = value if isinstance(value, (list, tuple)) else [value]
                clean[key] = [_coerce(kind, v) for v in items]
            else:
                clean[key] = _coerce(kind, value)
        except (TypeError, ValueError, argparse.ArgumentTypeError) as exc:
            reason = str(exc) if str(exc).startswith("is not") else f"is not a valid {kind.__name__}"
            raise ConfigError(origin, f"option {key!r}: {value!r} {reason}") from None
    config = cls(**clean)
    validate = getattr(config, "validate", None)
    if validate is not None:
        validate()
    return config


def resolve_config(cls: type[C], args: argparse.Namespace) -> C:
    """Defaults < ``--config`` file < explicit CLI flags, as one validated dataclass instance."""
    values: dict[str, Any] = {}
    flags: list[str] = []
    config_path = getattr(args, "config", None)
    if config_path:
        values.update(load_config_file(config_path))
    _given_flags(cls, args, values, flags, "")
    return build_config(cls, values, source=config_path or "command line", flags=flags)


def _given_flags(cls: type, args: argparse.Namespace, values: dict[str, Any], flags: list[str],
                 prefix: str) -> None:
    """Merge the flags given on the command line into ``values`` (nested sections into their mappings) and
    list their options in ``flags``."""
    hints = _field_types(cls)
    for spec in dataclasses.fields(cls):  # type: ignore[arg-type]
        kind, _ = _base_type(hints[spec.name])
        if dataclasses.is_dataclass(kind):
            section = values.get(spec.name)
            section = dict(section) if isinstance(section, dict) else {}
            _given_flags(kind, args, section, flags, f"{prefix}{spec.name}.")
            if section:
                values[spec.name] = section
            continue
        given = getattr(args, prefix + spec.name, None)
        if given is not None:
            values[spec.name] = given
            flags.append(prefix + spec.name)


def config_to_dict(config: Any) -> dict[str, Any]:
    """A plain, JSON-ready dict of a config dataclass (paths as strings)."""
    return json.loads(json.dumps(dataclasses.asdict(config), default=str))
