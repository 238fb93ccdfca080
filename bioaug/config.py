"""Stage configurations: dataclasses with defaults, settable from a YAML/JSON file and from the command line.

Each stage defines one dataclass (``TileConfig``, ``TrainConfig``, ...). Its fields are the single source of
truth for defaults, command-line options (``--field-name``) and help text (``field(metadata={"help": ...})``),
so the CLI, config files and the library can never disagree. Precedence: defaults < config file < CLI flags.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from .errors import ConfigError

C = TypeVar("C")


def option(default: Any, help: str, **kwargs: Any) -> Any:
    """A dataclass field with help text for ``--help``; lists and dicts get a default factory."""
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata={"help": help, **kwargs})
    return dataclasses.field(default=default, metadata={"help": help, **kwargs})


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


def add_config_arguments(parser: argparse.ArgumentParser, cls: type, *, skip: tuple[str, ...] = ()) -> None:
    """Add one ``--field-name`` option per dataclass field; unset options stay ``None`` (= not given)."""
    hints = _field_types(cls)
    group = parser.add_argument_group(f"{cls.__name__} options (also settable in --config)")
    for spec in dataclasses.fields(cls):
        if spec.name in skip:
            continue
        kind, is_list = _base_type(hints[spec.name])
        default = spec.default if spec.default is not dataclasses.MISSING else spec.default_factory()  # type: ignore[misc]
        flag = "--" + spec.name.replace("_", "-")
        help_text = f"{spec.metadata.get('help', '')} (default: {default})"
        if "choices" in spec.metadata:
            help_text += f"; one of {', '.join(map(str, spec.metadata['choices']))}"
        parse = _parse_bool if kind is bool else kind
        group.add_argument(flag, dest=spec.name, type=parse, nargs="+" if is_list else None, default=None,
                           metavar=spec.name.upper(), help=help_text)


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON mapping of option names to values."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(path, f"cannot read config ({exc.strerror})") from None
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


def build_config(cls: type[C], values: dict[str, Any], source: str | Path = "config") -> C:
    """Instantiate ``cls`` from a mapping, rejecting unknown keys and values of the wrong type or choice."""
    hints = _field_types(cls)
    names = {spec.name: spec for spec in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ConfigError(source, f"unknown option {unknown[0]!r}; valid: {', '.join(sorted(names))}")
    clean: dict[str, Any] = {}
    for key, value in values.items():
        kind, is_list = _base_type(hints[key])
        try:
            if value is None:
                clean[key] = None
            elif is_list:
                items = value if isinstance(value, (list, tuple)) else [value]
                clean[key] = [kind(v) for v in items]
            elif kind is bool and isinstance(value, str):
                clean[key] = _parse_bool(value)
            else:
                clean[key] = kind(value)
        except (TypeError, ValueError, argparse.ArgumentTypeError):
            raise ConfigError(source, f"option {key!r}: {value!r} is not a valid {kind.__name__}") from None
        choices = names[key].metadata.get("choices")
        if choices and clean[key] is not None:
            for item in clean[key] if is_list else [clean[key]]:
                if item not in choices:
                    raise ConfigError(source, f"option {key!r}: {item!r} is not one of {', '.join(map(str, choices))}")
    config = cls(**clean)
    validate = getattr(config, "validate", None)
    if validate is not None:
        validate()
    return config


def resolve_config(cls: type[C], args: argparse.Namespace) -> C:
    """Defaults < ``--config`` file < explicit CLI flags, as one validated dataclass instance."""
    values: dict[str, Any] = {}
    config_path = getattr(args, "config", None)
    if config_path:
        values.update(load_config_file(config_path))
    for spec in dataclasses.fields(cls):  # type: ignore[arg-type]
        given = getattr(args, spec.name, None)
        if given is not None:
            values[spec.name] = given
    return build_config(cls, values, source=config_path or "command line")


def config_to_dict(config: Any) -> dict[str, Any]:
    """A plain, JSON-ready dict of a config dataclass (paths as strings)."""
    return json.loads(json.dumps(dataclasses.asdict(config), default=str))
