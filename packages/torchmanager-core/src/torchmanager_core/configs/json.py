"""`JSONConfigs`: configurations read from a JSON file, with upstream's `extends` inheritance."""

from __future__ import annotations

import abc
import argparse
import os
from collections.abc import Sequence
from typing import TypeVar

from .basic import Configs
from .files import read_json

__all__ = ["JSONConfigs"]

_C = TypeVar("_C", bound="JSONConfigs")


class JSONConfigs(Configs, abc.ABC):
    """`Configs` read from a JSON file: `python train.py config.json [--replace_experiment]`.

    The file maps field names to values; `"extends": "parent.json"` (or a list) inherits the keys of
    other files, relative to this one, which its own keys override. Every key must be an
    annotated field and every value must match its annotation.
    """

    @staticmethod
    def get_arguments(
        parser: argparse.ArgumentParser | argparse._ArgumentGroup | None = None,
    ) -> argparse.ArgumentParser | argparse._ArgumentGroup:
        """Add the config file path and `--replace_experiment` to `parser` (a new one if None)."""
        parser = argparse.ArgumentParser() if parser is None else parser
        parser.add_argument("json", type=str, help="Path to the JSON configuration file.")
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
        """Read the JSON file named on the terminal (or in `arguments`) as `from_json` does."""
        parser = argparse.ArgumentParser() if parser is None else parser
        JSONConfigs.get_arguments(parser)
        argv = [arg for item in arguments for arg in ([item] if isinstance(item, str) else item)]
        parsed = parser.parse_args(argv if arguments else None)
        return cls._from_file(
            parsed.json, read_json, show_summary=show_summary, replace_experiment=parsed.replace_experiment
        )

    @classmethod
    def from_json(cls: type[_C], json_path: str | os.PathLike[str], /, *, show_summary: bool = True) -> _C:
        """Configs from a JSON file and the files it `extends`, checked and formatted; then the
        experiment folder is checked and the settings logged, as `from_arguments` does.

        Raises:
            FileNotFoundError: The file, or a file it extends, does not exist.
            ConfigsFormatError: An unknown key, a wrong type, a tag that is not plain data, or a
                value `format_arguments` rejected.
            FileExistsError: The experiment folder exists and `replace_experiment` is false.
        """
        return cls._from_file(json_path, read_json, show_summary=show_summary)
