"""`FileConfigs`: configurations read from a file named on the terminal, the base of YAML and JSON configs.

Who owns what: this module owns the terminal entry (`python train.py config.yaml
[--replace_experiment]`); `files` owns reading a file and its `extends:` parents; the subclasses
only say which format they read.
"""

from __future__ import annotations

import abc
import argparse
import os
from collections.abc import Sequence
from typing import ClassVar, TypeVar

from .basic import Configs, terminal_arguments
from .files import Reader, read_json, read_yaml

__all__ = ["FileConfigs"]

_C = TypeVar("_C", bound="FileConfigs")
_READERS: dict[str, Reader] = {"yaml": read_yaml, "json": read_json}


class FileConfigs(Configs, abc.ABC):
    """`Configs` read from a file: the file maps field names to values; `extends: parent` (or a list)
    inherits the keys of other files, relative to this one, which its own keys override. Every key
    must be an annotated field and every value must match its annotation."""

    file_format: ClassVar[str]
    """The format's name, also the terminal argument holding the path ("yaml", "json")."""

    @classmethod
    def reader(cls) -> Reader:
        """The format's safe reader of one file into plain data."""
        return _READERS[cls.file_format]

    @classmethod
    def _add_file_arguments(cls, parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
        parser.add_argument(
            cls.file_format, type=str, help=f"Path to the {cls.file_format.upper()} configuration file."
        )
        parser.add_argument(
            "--replace_experiment",
            action="store_true",
            help="Replace the experiment if it exists (overrides the file).",
        )

    @classmethod
    def from_arguments(
        cls: type[_C],
        *arguments: str | Sequence[str],
        parser: argparse.ArgumentParser | None = None,
        show_summary: bool = True,
    ) -> _C:
        """Read the file named on the terminal (or in `arguments`) as `from_file` does."""
        parser = argparse.ArgumentParser() if parser is None else parser
        cls._add_file_arguments(parser)
        parsed = parser.parse_args(terminal_arguments(arguments))
        path = getattr(parsed, cls.file_format)
        return cls._from_file(
            path, cls.reader(), show_summary=show_summary, replace_experiment=parsed.replace_experiment
        )

    @classmethod
    def from_file(cls: type[_C], path: str | os.PathLike[str], /, *, show_summary: bool = True) -> _C:
        """Configs from a file and the files it `extends`, checked and formatted; then the experiment
        folder is checked and the settings logged, as `from_arguments` does.

        Raises:
            ImportError: The format needs a package that is not installed (PyYAML for YAML).
            FileNotFoundError: The file, or a file it extends, does not exist.
            ConfigsFormatError: An unknown key, a wrong type, data that is not plain, or a value
                `format_arguments` rejected.
            FileExistsError: The experiment folder exists and `replace_experiment` is false.
        """
        return cls._from_file(path, cls.reader(), show_summary=show_summary)
