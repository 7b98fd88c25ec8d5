"""`YAMLConfigs`: configurations read from a YAML file (with `extends:`), never with an unsafe loader.

Upstream read config files with `yaml.UnsafeLoader`, so a config file could run code; here every
YAML file is read with `yaml.safe_load` and a tag that would build a Python object is an error.
"""

from __future__ import annotations

import abc
import argparse
import os
from collections.abc import Sequence
from typing import TypeVar

from .basic import Configs
from .files import read_yaml

__all__ = ["YAMLConfigs"]

_C = TypeVar("_C", bound="YAMLConfigs")


class YAMLConfigs(Configs, abc.ABC):
    """`Configs` read from a YAML file: `python train.py config.yaml [--replace_experiment]`.

    The file maps field names to values; `extends: parent.yaml` (or a list) inherits the keys of
    other files, relative to this one, which its own keys override. Every key must be an
    annotated field and every value must match its annotation. Needs PyYAML (the extra `yaml`).
    """

    @staticmethod
    def get_arguments(
        parser: argparse.ArgumentParser | argparse._ArgumentGroup | None = None,
    ) -> argparse.ArgumentParser | argparse._ArgumentGroup:
        """Add the config file path and `--replace_experiment` to `parser` (a new one if None)."""
        parser = argparse.ArgumentParser() if parser is None else parser
        parser.add_argument("yaml", type=str, help="Path to the YAML configuration file.")
        parser.add_argument(
            "--replace_experiment",
            action="store_true",
            help="Replace the experiment if it exists (overrides the file).",
        )
        return parser

    @classmethod
    def from_arguments(
        cls: type[_C],
        *arguments: str | Sequence[str],
        parser: argparse.ArgumentParser | None = None,
        show_summary: bool = True,
    ) -> _C:
        """Read the YAML file named on the terminal (or in `arguments`) as `from_yaml` does."""
        parser = argparse.ArgumentParser() if parser is None else parser
        YAMLConfigs.get_arguments(parser)
        argv = [arg for item in arguments for arg in ([item] if isinstance(item, str) else item)]
        parsed = parser.parse_args(argv if arguments else None)
        return cls._from_file(
            parsed.yaml, read_yaml, show_summary=show_summary, replace_experiment=parsed.replace_experiment
        )

    @classmethod
    def from_yaml(cls: type[_C], yaml_path: str | os.PathLike[str], /, *, show_summary: bool = True) -> _C:
        """Configs from a YAML file and the files it `extends`, checked and formatted; then the
        experiment folder is checked and the settings logged, as `from_arguments` does.

        Raises:
            ImportError: PyYAML is not installed.
            FileNotFoundError: The file, or a file it extends, does not exist.
            ConfigsFormatError: An unknown key, a wrong type, a tag that is not plain data, or a
                value `format_arguments` rejected.
            FileExistsError: The experiment folder exists and `replace_experiment` is false.
        """
        return cls._from_file(yaml_path, read_yaml, show_summary=show_summary)
