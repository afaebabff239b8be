"""Config files and CLI options for the stage configs: what turns a YAML/JSON file or a command
line into a :class:`~simpleclr.config.StageConfig`. Apart from config.py so that the configs stay
one screenful of fields and checks each; the CLI and the plan files read through here.
"""
from __future__ import annotations

import argparse
import functools
import json
import re
import typing
from dataclasses import fields
from pathlib import Path
from typing import Any, Optional, Tuple, Type, TypeVar

from .config import ConfigError, StageConfig
from .errors import one_line
from .fielddocs import field_doc

T = TypeVar("T", bound=StageConfig)


# ---- config files ----------------------------------------------------------------------------
# YAML 1.1 reads 1e-3 (no dot) as text; YAML 1.2 and JSON read it as a number, as people expect.
_FLOAT = re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                        |[-+]?\.(?:inf|Inf|INF)
                        |\.(?:nan|NaN|NAN))$""", re.X)


@functools.lru_cache(maxsize=1)
def _yaml_loader() -> type:
    import yaml

    # libyaml's parser where PyYAML has it: a 10,000-run plan parses in about 1 s instead of 8;
    # the same safe constructor either way.
    base = yaml.CSafeLoader if getattr(yaml, "__with_libyaml__", False) else yaml.SafeLoader

    class Loader(base):  # type: ignore[valid-type, misc]
        pass

    Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))
    return Loader


def _refuse_aliases(root: Any) -> None:
    """Refuse a node graph in which a node is reached twice, which only an alias (``*name``)
    does: a few nested aliases of a 580-byte file stand for a million values (the "billion
    laughs"), and no plan or config needs one. Walked with its own stack: any depth."""
    import yaml

    seen: set[int] = set()
    todo = [root]
    while todo:
        node = todo.pop()
        if id(node) in seen:
            raise yaml.composer.ComposerError(
                None, None, f"the value anchored at line {node.start_mark.line + 1} is repeated by "
                "an alias (*name); aliases are refused here (a few nested ones can expand to "
                "gigabytes): write the value out", node.start_mark)
        seen.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            todo.extend(node.value)
        elif isinstance(node, yaml.MappingNode):
            todo.extend(n for pair in node.value for n in pair)


def yaml_load(text: str) -> Any:
    """``yaml.safe_load`` that also reads exponents without a dot (``lr: 1e-3``) as numbers and
    refuses aliases; a document nested too deep is a ``yaml.YAMLError``."""
    import yaml

    loader = _yaml_loader()(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _refuse_aliases(node)
        return loader.construct_document(node)
    except RecursionError:
        raise yaml.YAMLError("it is nested too deep to be a plan or a config") from None
    finally:
        loader.dispose()


def read_config_file(path: Optional[str]) -> dict:
    """The fields in a YAML or JSON ``--config`` file; every problem is one :class:`ConfigError`
    line naming the file (missing, unreadable, invalid, or not a mapping of fields)."""
    import yaml

    if not path:
        return {}
    file = Path(path)
    try:
        text = file.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"config file {file} cannot be read ({e.strerror or e}): give the path "
                          "of a YAML or JSON file of config fields") from None
    try:
        obj = json.loads(text) if file.suffix == ".json" else yaml_load(text)
    except ValueError as e:  # JSONDecodeError
        raise ConfigError(f"config file {file} is not valid JSON ({one_line(str(e), 200)}): fix it") from None
    except RecursionError:
        raise ConfigError(f"config file {file} is nested too deep to be a mapping of config "
                          "fields: fix it") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"config file {file} is not valid YAML{at} "
                          f"({one_line(str(getattr(e, 'problem', None) or e), 200)}): fix it") from None
    if obj is None:
        return {}
    if not isinstance(obj, dict):
        raise ConfigError(f"config file {file} holds {one_line(repr(obj), 60)} instead of a mapping of config "
                          "fields (e.g. lr: 0.3)")
    return obj


# ---- CLI options generated from the fields ------------------------------------------------
def _parse_optional(kind: type):
    def parse(text: str):
        return None if text.lower() in ("none", "null", "") else kind(text)

    return parse


def parse_bool(text: str) -> bool:
    """``true``/``false`` (also 1/0, yes/no, on/off) for an option; argparse's error otherwise."""
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _help(cls: Type[StageConfig], name: str) -> str:
    """The field's line from :mod:`simpleclr.fielddocs` (the notebooks' parameters cells show it
    too), escaped for argparse."""
    return field_doc(cls.stage, name).replace("%", "%%")


def add_config_arguments(parser: argparse.ArgumentParser, cls: Type[StageConfig]) -> None:
    """Add one ``--field-name`` option per config field (default: the dataclass default)."""
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        hint = hints[f.name]
        args = typing.get_args(hint)
        optional = typing.get_origin(hint) is typing.Union and type(None) in args
        base = next(a for a in args if a is not type(None)) if optional else hint
        flag = "--" + f.name.replace("_", "-")
        if typing.get_origin(base) in (tuple, Tuple):
            parser.add_argument(flag, dest=f.name, type=float, nargs="+", default=argparse.SUPPRESS,
                                help=_help(cls, f.name))
            continue
        kind = {bool: parse_bool, int: int, float: float, str: str}[base]
        if optional:
            kind = _parse_optional(kind)
        parser.add_argument(flag, dest=f.name, type=kind, default=argparse.SUPPRESS,
                            help=f"{_help(cls, f.name)} (default: {f.default!r})")


def config_from_args(cls: Type[T], ns: argparse.Namespace, base: Optional[dict] = None) -> T:
    """A config from parsed options laid over ``base`` (e.g. a YAML/JSON file's contents)."""
    d = dict(base or {})
    d.update({f.name: getattr(ns, f.name) for f in fields(cls) if hasattr(ns, f.name)})
    return cls.from_dict(d)
