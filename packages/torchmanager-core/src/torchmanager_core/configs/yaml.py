"""`YAMLConfigs`: configurations read from a YAML file (with `extends:`), never with an unsafe loader.

Upstream read config files with `yaml.UnsafeLoader`, so a config file could run code; here every
YAML file is read with `yaml.safe_load` and a tag that would build a Python object is an error.
"""

from __future__ import annotations

import abc
import os
from typing import TypeVar

from .file_configs import FileConfigs

__all__ = ["YAMLConfigs"]

_C = TypeVar("_C", bound="YAMLConfigs")


class YAMLConfigs(FileConfigs, abc.ABC):
    """`Configs` read from a YAML file: `python train.py config.yaml [--replace_experiment]`
    (`extends: parent.yaml` inherits another file's keys). Needs PyYAML (the extra `yaml`)."""

    file_format = "yaml"

    @classmethod
    def from_yaml(cls: type[_C], yaml_path: str | os.PathLike[str], /, *, show_summary: bool = True) -> _C:
        """Configs from a YAML file and the files it `extends` (see `FileConfigs.from_file`)."""
        return cls.from_file(yaml_path, show_summary=show_summary)
