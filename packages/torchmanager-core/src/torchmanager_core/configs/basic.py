"""`Configs`: configurations from terminal arguments, with an experiment name and folder.

Who owns what: this class owns the `-exp/--experiment`, `--comments`, `--resume_experiment` and
`--replace_experiment` flags and applies, at start-up, the rule of `experiment_folder` (the one
home of when a re-run continues and when it starts a numbered folder); the Experiment callback
applies the same rule, creates the folder and writes the run's files into it (`<name>.cfg` is
`to_yaml` of these configs).
"""

from __future__ import annotations

import abc
import argparse
import os
import shutil
from collections.abc import Sequence
from typing import TypeVar

from ..progress import add_console
from .base import BaseConfigs, logger
from .experiment_folder import choose_experiment_folder, free_experiment_folder
from .files import Reader, load_config_file, read_yaml

__all__ = ["EXPERIMENTS_DIR", "Configs", "free_experiment_folder"]

EXPERIMENTS_DIR = "experiments"
"""The folder, relative to the working directory, holding one `<name>.exp` folder per experiment."""

_C = TypeVar("_C", bound="Configs")


def _folder_message(named: str, folder: str, resume: bool) -> str:
    """The line logged when a run continues an unfinished one or moves to a numbered folder."""
    if resume:
        held = f"The experiment folder '{named}' holds a finished run, so this" if folder != named else "This"
        return (
            f"{held} run continues the unfinished run in '{folder}' from its last checkpoint "
            "(`--replace_experiment` starts it anew instead)"
        )
    return (
        f"The experiment folder '{named}' holds an earlier run, so this run is kept in '{folder}' (pass "
        "`--resume_experiment` to continue the earlier run, or `--replace_experiment` to replace it)"
    )


def terminal_arguments(arguments: tuple[str | Sequence[str], ...]) -> list[str] | None:
    """`from_arguments`' strings or one list, flattened; None (argparse reads `sys.argv`) when none were given."""
    if not arguments:
        return None
    return [arg for item in arguments for arg in ([item] if isinstance(item, str) else item)]


class Configs(BaseConfigs, abc.ABC):
    """Configurations parsed from terminal arguments; subclass it with annotated fields, add their
    arguments in `get_arguments` and log them in `show_settings`.

    Fields every configs has:
        experiment: The experiment name, normalised to end in `.exp` (`-exp/--experiment`).
        comments: Free text logged with the settings (`--comments`).
        replace_experiment: Delete an existing experiment folder of the same name at start-up
            (`--replace_experiment`).
        resume_experiment: Continue the experiment's run from its last checkpoint (`--resume_experiment`,
            also to train a finished run for more epochs; pass it on as `Experiment(..., resume=...)`).
            Without either flag the same command run again continues an unfinished run (stopped by a
            signal, a crash or a kill: `resume_experiment` is then set True and logged), and after a
            finished run goes to the next numbered folder (`<name>-2.exp`, ...), logged; see
            `torchmanager_core.configs.experiment_folder`.
    """

    comments: str | None = None
    experiment: str = "test.exp"
    replace_experiment: bool = False
    resume_experiment: bool = False

    @staticmethod
    def get_arguments(
        parser: argparse.ArgumentParser | argparse._ArgumentGroup | None = None,
    ) -> argparse.ArgumentParser | argparse._ArgumentGroup:
        """Add the experiment flags to `parser` (a new parser if None), skipping any it already has.

        A subclass adds its own arguments and may call `Configs.get_arguments(parser)`;
        `from_arguments` adds the experiment flags anyway, so forgetting it is harmless.
        """
        parser = argparse.ArgumentParser() if parser is None else parser
        known = parser._option_string_actions  # shared by a parser and its argument groups
        if "--experiment" not in known and "-exp" not in known:
            parser.add_argument(
                "-exp", "--experiment", type=str, default="test.exp", help="The name of the experiment."
            )
        if "--comments" not in known:
            parser.add_argument("--comments", type=str, default=None, help="Comments on this experiment.")
        if "--resume_experiment" not in known:
            parser.add_argument(
                "--resume_experiment",
                action="store_true",
                default=False,
                help="Continue the experiment from its last checkpoint if it exists.",
            )
        if "--replace_experiment" not in known:
            parser.add_argument(
                "--replace_experiment", action="store_true", default=False, help="Replace the experiment if it exists."
            )
        return parser

    @classmethod
    def from_arguments(
        cls: type[_C],
        *arguments: str | Sequence[str],
        parser: argparse.ArgumentParser | None = None,
        show_summary: bool = True,
    ) -> _C:
        """Parse terminal arguments into formatted configs, check the experiment folder, and log
        the settings.

        Args:
            *arguments: The arguments to parse, as strings or one list; none: the terminal's.
            parser: The parser to add the arguments to (a new one if None).
            show_summary: Log the settings, environments and comments (to the console too).

        Raises:
            ConfigsFormatError: `format_arguments` rejected a value.
        """
        parser = argparse.ArgumentParser() if parser is None else parser
        cls.get_arguments(parser)
        Configs.get_arguments(parser)
        configs = parser.parse_args(terminal_arguments(arguments), namespace=cls())
        configs._fill_defaults()
        configs._format()
        configs._start_experiment(show_summary)
        return configs

    @classmethod
    def from_experiment(cls: type[_C], exp: str | os.PathLike[str], /) -> _C:
        """Load the configs that the Experiment callback saved for a run.

        Args:
            exp: The experiment folder, or its name (`name` or `name.exp`) under `experiments/`.

        Returns:
            The configs read from `<exp>/<name>.cfg` (YAML), checked and formatted; the folder is
            left as it is.
        """
        folder = os.fspath(exp)
        folder = folder if folder.endswith(".exp") else f"{folder}.exp"
        if not os.path.isdir(folder) and os.path.isdir(os.path.join(EXPERIMENTS_DIR, folder)):
            folder = os.path.join(EXPERIMENTS_DIR, folder)
        name = os.path.basename(os.path.normpath(folder))[: -len(".exp")]
        return cls._from_file(os.path.join(folder, f"{name}.cfg"), read_yaml, start=False)

    @classmethod
    def _from_file(
        cls: type[_C],
        path: str | os.PathLike[str],
        read: Reader,
        *,
        start: bool = True,
        show_summary: bool = True,
        replace_experiment: bool = False,
    ) -> _C:
        """Configs from a file and the files it `extends`; with `start`, check the experiment
        folder and log the settings as `from_arguments` does."""
        values, sources = load_config_file(path, read, cls)
        configs = cls._from_values(values, sources)
        if replace_experiment:
            configs.replace_experiment = True
        if start:
            configs._start_experiment(show_summary)
        return configs

    def format_arguments(self) -> None:
        """Check the experiment flags and end the experiment name in `.exp`."""
        super().format_arguments()
        name = self.experiment
        if not isinstance(name, str) or name in ("", ".exp") or os.path.isabs(name) or ".." in name.split(os.sep):
            raise ValueError(
                "`experiment` must be a name (or a relative path without `..`) for a folder under "
                f"'{EXPERIMENTS_DIR}/'. Received: experiment={name!r}"
            )
        self.experiment = name if name.endswith(".exp") else f"{name}.exp"
        if not isinstance(self.replace_experiment, bool):
            raise TypeError(
                f"`replace_experiment` must be a bool. Received: replace_experiment={self.replace_experiment!r}"
            )
        if self.comments is not None and not isinstance(self.comments, str):
            raise TypeError(f"`comments` must be a str or None. Received: comments={self.comments!r}")

    @property
    def experiment_dir(self) -> str:
        """The experiment folder: `experiments/<name>.exp`."""
        return os.path.join(EXPERIMENTS_DIR, self.experiment)

    def _start_experiment(self, show_summary: bool) -> None:
        # Under torchrun every process parses the configs, before any process group exists. Each one
        # applies the folder rule (it only reads the disk, so they agree); only the launch's rank 0
        # (the RANK variable) deletes a replaced folder and logs.
        main = os.environ.get("RANK", "0") == "0"
        if self.replace_experiment:
            if main and os.path.exists(self.experiment_dir):
                shutil.rmtree(self.experiment_dir)
        elif not self.resume_experiment:
            named = self.experiment_dir
            folder, resume = choose_experiment_folder(named, "auto")
            self.experiment = os.path.relpath(folder, EXPERIMENTS_DIR)
            self.resume_experiment = resume
            if main and (resume or folder != named):
                add_console()
                logger.info(_folder_message(named, folder, resume))
        if show_summary and main:
            self._show_summary()

    def _show_summary(self) -> None:
        add_console()
        logger.info("------------Settings------------")
        logger.info(f"Experiment name: {self.experiment}")
        self.show_settings()
        logger.info("----------Environments----------")
        self.show_environments()
        if self.comments is not None:
            logger.info("------------Comments------------")
            logger.info(self.comments)
        logger.info("--------------------------------")
