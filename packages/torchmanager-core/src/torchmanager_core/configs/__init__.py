"""Configurations: typed `argparse.Namespace` subclasses read from the terminal, YAML or JSON.

`Configs` parses terminal arguments, `YAMLConfigs` and `JSONConfigs` read a file (with
`extends:` inheritance); all check their values against the subclass's annotations and write
themselves back as plain data (`to_dict`, `to_yaml`, `to_json`).
"""

from .base import BaseConfigs
from .basic import EXPERIMENTS_DIR, Configs
from .fields import ConfigsFormatError
from .file_configs import FileConfigs
from .json import JSONConfigs
from .yaml import YAMLConfigs

__all__ = [
    "EXPERIMENTS_DIR",
    "BaseConfigs",
    "Configs",
    "ConfigsFormatError",
    "FileConfigs",
    "JSONConfigs",
    "YAMLConfigs",
]
