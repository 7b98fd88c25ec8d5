"""`JSONConfigs`: configurations read from a JSON file, with upstream's `extends` inheritance."""

from __future__ import annotations

import abc
import os
from typing import TypeVar

from .file_configs import FileConfigs

__all__ = ["JSONConfigs"]

_C = TypeVar("_C", bound="JSONConfigs")


class JSONConfigs(FileConfigs, abc.ABC):
    """`Configs` read from a JSON file: `python train.py config.json [--replace_experiment]`
    (`"extends": "parent.json"` inherits another file's keys)."""

    file_format = "json"

    @classmethod
    def from_json(cls: type[_C], json_path: str | os.PathLike[str], /, *, show_summary: bool = True) -> _C:
        """Configs from a JSON file and the files it `extends` (see `FileConfigs.from_file`)."""
        return cls.from_file(json_path, show_summary=show_summary)
