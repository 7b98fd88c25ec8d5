"""The seed README's "Start from Configurations" section, run verbatim with its `...` filled in.

It imports the meta-package's `torchmanager.configs`, so it is skipped where torchmanager-core is
installed alone.
"""

import argparse
import logging
import sys
from pathlib import Path
from typing import Union

import pytest

pytest.importorskip("torchmanager.configs")

# fmt: off
from torchmanager.configs import Configs as _Configs


# define necessary configurations
class Configs(_Configs):
    epochs: int
    lr: float

    @staticmethod
    def get_arguments(parser: Union[argparse.ArgumentParser, argparse._ArgumentGroup] = argparse.ArgumentParser()) -> Union[argparse.ArgumentParser, argparse._ArgumentGroup]:  # noqa: B008, UP007
        '''Add arguments to argument parser'''
        parser.add_argument("--epochs", type=int, default=10, help="Number of training epochs.")
        parser.add_argument("--lr", type=float, default=0.01, help="Learning rate.")
        return parser

    def show_settings(self) -> None:
        '''Display current configuerations'''
        logger = logging.getLogger("torchmanager")
        logger.info(f"epochs={self.epochs}")
        logger.info(f"lr={self.lr}")
# fmt: on


def test_configs_from_terminal_arguments_as_in_the_readme(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.setattr(sys, "argv", ["train.py", "--epochs", "3", "--lr", "0.5", "-exp", "readme"])
    with caplog.at_level(logging.INFO, logger="torchmanager"):
        # get configs from terminal arguments
        configs = Configs.from_arguments()

    assert (configs.epochs, configs.lr, configs.experiment) == (3, 0.5, "readme.exp")
    assert configs.replace_experiment is False and configs.comments is None
    messages = [record.getMessage() for record in caplog.records]
    assert ["Experiment name: readme.exp", "epochs=3", "lr=0.5"] == messages[1:4]


def test_the_meta_package_re_exports_core() -> None:
    import torchmanager.configs
    import torchmanager_core.configs

    for name in torchmanager_core.configs.__all__:
        assert getattr(torchmanager.configs, name) is getattr(torchmanager_core.configs, name)
