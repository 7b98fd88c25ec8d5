"""Config files: reading YAML (always with `yaml.safe_load`) and JSON, and the `extends:` chain.

A config file may name parent files in `extends` (a path or a list of paths, relative to the
file naming them); its own keys override theirs, and with several parents the first named wins,
as in upstream torchmanager. PyYAML is imported only here, when a YAML file is read or written.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from types import ModuleType
from typing import Any

from .fields import ConfigsFormatError

__all__ = ["import_yaml", "load_config_file", "read_json", "read_yaml", "write_json", "write_yaml"]

Reader = Callable[[str, type], object]
"""Reads the document at a path; the type is the configs class, for error messages."""


def import_yaml() -> ModuleType:
    """The `yaml` module (PyYAML), or an ImportError saying how to install it."""
    try:
        import yaml
    except ImportError as error:
        raise ImportError(
            'YAML configs need PyYAML, the optional extra `yaml`: pip install "torchmanager-core[yaml]"'
        ) from error
    return yaml


def read_yaml(path: str, cfg_type: type) -> object:
    """The YAML document at `path`, read with `yaml.safe_load`: tags that would build Python
    objects (`!!python/object...`), and so could run code, are refused."""
    yaml = import_yaml()
    with open(path, encoding="utf-8") as file:
        try:
            return yaml.safe_load(file)
        except yaml.constructor.ConstructorError as error:
            raise ConfigsFormatError(
                cfg_type,
                f"Config file '{path}' uses a YAML tag that is not plain data ({error.problem}); configs are "
                "read with `yaml.safe_load`, which never builds Python objects or runs code from a file. "
                f"Write plain values (numbers, strings, booleans, lists, mappings). Received: {error.problem_mark}",
            ) from error
        except yaml.YAMLError as error:
            raise ConfigsFormatError(cfg_type, f"Config file '{path}' is not valid YAML. Received: {error}") from error


def read_json(path: str, cfg_type: type) -> object:
    """The JSON document at `path`."""
    with open(path, encoding="utf-8") as file:
        try:
            return json.load(file)
        except json.JSONDecodeError as error:
            raise ConfigsFormatError(cfg_type, f"Config file '{path}' is not valid JSON. Received: {error}") from error


def write_yaml(data: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Write plain `data` to `path` as YAML (keys in the given order)."""
    yaml = import_yaml()
    with open(path, "w", encoding="utf-8") as file:
        yaml.safe_dump(data, file, sort_keys=False, default_flow_style=False)


def write_json(data: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Write plain `data` to `path` as indented JSON."""
    with open(path, "w", encoding="utf-8") as file:
        json.dump(data, file, indent=2)
        file.write("\n")


def load_config_file(
    path: str | os.PathLike[str], read: Reader, cfg_type: type, *, _chain: tuple[str, ...] = ()
) -> tuple[dict[str, Any], dict[str, str]]:
    """Read a config file and the files it extends, merged.

    Args:
        path: The config file.
        read: `read_yaml` or `read_json` (parents are read the same way).
        cfg_type: The configs class being built, for error messages.

    Returns:
        The merged values, and for each key the file that set it (for error messages).

    Raises:
        FileNotFoundError: The file, or a file it extends, does not exist.
        ConfigsFormatError: A file is not a mapping with string keys, `extends` is not a path or
            a list of paths, or the `extends` chain forms a cycle.
    """
    path = os.path.normpath(os.fspath(path))
    if not os.path.isfile(path):
        named_by = f" (named in `extends` of '{_chain[-1]}')" if _chain else ""
        raise FileNotFoundError(f"Config file '{path}' does not exist{named_by}. Received: path='{path}'")
    real = os.path.realpath(path)
    if real in (os.path.realpath(p) for p in _chain):
        cycle = " -> ".join([*_chain, path])
        raise ConfigsFormatError(cfg_type, f"`extends` must not form a cycle. Received: extends chain {cycle}")

    document = read(path, cfg_type)
    document = {} if document is None else document  # an empty file holds no keys
    if not isinstance(document, dict) or not all(isinstance(key, str) for key in document):
        raise ConfigsFormatError(
            cfg_type,
            f"Config file '{path}' must hold a mapping of field names to values. Received: {type(document).__name__}"
            + (f" with keys {list(document)}" if isinstance(document, dict) else ""),
        )
    document = dict(document)
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for parent in reversed(_parents(document.pop("extends", []), path, cfg_type)):
        parent_path = parent if os.path.isabs(parent) else os.path.join(os.path.dirname(path), parent)
        parent_values, parent_sources = load_config_file(parent_path, read, cfg_type, _chain=(*_chain, path))
        values.update(parent_values)
        sources.update(parent_sources)
    values.update(document)
    sources.update(dict.fromkeys(document, path))
    return values, sources


def _parents(extends: object, path: str, cfg_type: type) -> list[str]:
    if isinstance(extends, str):
        return [extends]
    if isinstance(extends, list) and all(isinstance(parent, str) for parent in extends):
        return extends
    raise ConfigsFormatError(
        cfg_type, f"`extends` in '{path}' must be a file path or a list of file paths. Received: extends={extends!r}"
    )
