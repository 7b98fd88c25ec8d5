"""`BaseConfigs`: a typed `argparse.Namespace` that is built from plain data and saved as YAML/JSON.

Who owns what: this class owns the fields (the annotations of a subclass), building an object
from a dict with every value checked, and writing it back (`to_dict`, `to_yaml`, `to_json`).
`Configs` (basic.py) adds the terminal arguments and the experiment folder.
"""

from __future__ import annotations

import abc
import argparse
import copy
import logging
import os
import platform
import sys
from collections.abc import Mapping
from typing import Any, TypeVar

import torch

from ..version import DESCRIPTION
from .fields import ConfigsFormatError, config_fields, conform, to_plain
from .files import write_json, write_yaml

__all__ = ["BaseConfigs"]

_C = TypeVar("_C", bound="BaseConfigs")

logger = logging.getLogger("torchmanager")


class BaseConfigs(argparse.Namespace, abc.ABC):
    """Configurations: declare fields as annotations of a subclass, then build it from the
    terminal (`from_arguments`), a dict (`from_dict`) or a file (`YAMLConfigs`, `JSONConfigs`).

    Subclasses implement `get_arguments`, `from_arguments` and `show_settings` (`Configs` does
    the first two); `format_arguments` checks and normalises the values after they are set.
    """

    @staticmethod
    @abc.abstractmethod
    def get_arguments(
        parser: argparse.ArgumentParser | argparse._ArgumentGroup | None = None,
    ) -> argparse.ArgumentParser | argparse._ArgumentGroup:
        """Add this class's arguments to `parser` (a new parser if None) and return it."""

    @classmethod
    @abc.abstractmethod
    def from_arguments(cls: type[_C], *arguments: str, parser: argparse.ArgumentParser | None = None) -> _C:
        """Parse the given arguments (else the terminal's) into a formatted configs object."""

    def format_arguments(self) -> None:
        """Check and normalise the values once they are set; override it, calling `super()`, and
        raise ValueError/TypeError with a clear message for a value that is wrong."""

    @abc.abstractmethod
    def show_settings(self) -> None:
        """Log the settings, normally with `logging.getLogger("torchmanager").info(...)`."""

    def show_environments(self, description: str = DESCRIPTION) -> None:
        """Log the versions of torchmanager, Python and torch, and the platform."""
        logger.info(description)
        logger.info(f"python={sys.version}")
        logger.info(f"torch={torch.__version__}")
        logger.info(f"platform={platform.platform()}")

    @classmethod
    def from_dict(cls: type[_C], data: Mapping[str, Any], /, *, source: str = "the given dict") -> _C:
        """Build a formatted configs object from plain data (as `to_dict` returns).

        Args:
            data: Field names to values.
            source: Where `data` comes from, for error messages.

        Raises:
            ConfigsFormatError: A key is not a field, a value does not match its field's
                annotation, a field without a default is missing, or `format_arguments` failed.
        """
        return cls._from_values(dict(data), dict.fromkeys(data, source))

    @classmethod
    def _from_values(cls: type[_C], values: dict[str, Any], sources: dict[str, str]) -> _C:
        """`from_dict` with the file that set each key, as `load_config_file` returns them."""
        fields = config_fields(cls)
        for key, value in values.items():
            if key not in fields:
                raise ConfigsFormatError(
                    cls,
                    f"Config key `{key}` in '{sources[key]}' is not a field of `{cls.__name__}`; the fields are "
                    f"{', '.join(sorted(fields))}. Received: {key}={value!r}",
                )
        checked = {
            key: conform(value, fields[key], key=key, source=sources[key], cfg_type=cls)
            for key, value in values.items()
        }
        missing = [name for name in fields if name not in checked and not hasattr(cls, name)]
        if missing:
            where = ", ".join(sorted(set(sources.values()))) or "the given data"
            raise ConfigsFormatError(
                cls,
                f"`{cls.__name__}` needs a value for {', '.join(f'`{name}`' for name in missing)}, which "
                f"{'has' if len(missing) == 1 else 'have'} no default. Received: keys {sorted(checked)} from {where}",
            )
        configs = cls(**checked)
        configs._fill_defaults()
        configs._format()
        return configs

    def _fill_defaults(self) -> None:
        """Copy the class defaults of fields not set on this object into it, so that `vars()`,
        equality and `to_dict` see every field."""
        for name in config_fields(type(self)):
            if name not in vars(self) and hasattr(type(self), name):
                setattr(self, name, copy.deepcopy(getattr(type(self), name)))

    def _format(self) -> None:
        """Run `format_arguments`, naming the class in any error it raises."""
        try:
            self.format_arguments()
        except ConfigsFormatError:
            raise
        except Exception as error:
            raise ConfigsFormatError(
                type(self), f"`{type(self).__name__}.format_arguments` rejected the configs: {error}"
            ) from error

    def to_dict(self) -> dict[str, Any]:
        """The configs as plain YAML/JSON-safe data: every field and parsed argument (names
        starting with `_` left out), tuples as lists, other objects (a `torch.device`) as `str`.

        This is what the Experiment callback writes to `experiments/<name>.exp/<name>.cfg`, and
        what `from_dict` reads back.
        """
        names = [name for name in vars(self) if not name.startswith("_")]
        names += [name for name in config_fields(type(self)) if name not in names and hasattr(self, name)]
        return {name: to_plain(getattr(self, name)) for name in names}

    def to_yaml(self, path: str | os.PathLike[str]) -> None:
        """Write `to_dict()` to `path` as YAML (needs PyYAML, the extra `yaml`)."""
        write_yaml(self.to_dict(), path)

    def to_json(self, path: str | os.PathLike[str]) -> None:
        """Write `to_dict()` to `path` as JSON."""
        write_json(self.to_dict(), path)
