"""Configs from the terminal, YAML and JSON: parsing, the experiment folder, `extends`, checks.

Every test runs in its own temporary working directory, so `experiments/` is a real folder there.
Expected values are written by hand or read back with `yaml.safe_load`/`json.load` directly.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Optional

import pytest
import torch
import yaml

from torchmanager_core.configs import Configs, ConfigsFormatError, JSONConfigs, YAMLConfigs


@pytest.fixture(autouse=True)
def _in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RANK", raising=False)


class TrainConfigs(Configs):
    epochs: int
    lr: float

    @staticmethod
    def get_arguments(
        parser: argparse.ArgumentParser | argparse._ArgumentGroup | None = None,
    ) -> argparse.ArgumentParser | argparse._ArgumentGroup:
        parser = argparse.ArgumentParser() if parser is None else parser
        parser.add_argument("--epochs", type=int, default=10)
        parser.add_argument("--lr", type=float, default=0.01)
        return Configs.get_arguments(parser)

    def format_arguments(self) -> None:
        super().format_arguments()
        if self.epochs <= 0:
            raise ValueError(f"`epochs` must be positive. Received: epochs={self.epochs}")

    def show_settings(self) -> None:
        logging.getLogger("torchmanager").info(f"epochs={self.epochs}, lr={self.lr}")


class _RunFields:
    """The fields of the file-based configs below (a mixin, so YAML and JSON share them)."""

    epochs: int
    lr: float
    name: str
    use_amp: bool
    milestones: list[int]
    dropout: Optional[float] = None  # noqa: UP045 (the upstream spelling must work too)
    tags: list[str] | None = None

    def show_settings(self) -> None:
        logging.getLogger("torchmanager").info(f"name={self.name}")


class YAMLRun(_RunFields, YAMLConfigs):
    pass


class JSONRun(_RunFields, JSONConfigs):
    pass


RUN = {"epochs": 3, "lr": 0.5, "name": "digits", "use_amp": False, "milestones": [1, 2], "experiment": "run"}


def write_yaml(path: Path, data: dict[str, object]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    return path


def write_json(path: Path, data: dict[str, object]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


# --- from the terminal ---------------------------------------------------------------------------


def test_from_arguments_with_a_list_or_strings() -> None:
    argv = ["--epochs", "3", "--lr", "0.5", "-exp", "run", "--comments", "first try"]
    configs = TrainConfigs.from_arguments(argv, show_summary=False)
    assert (configs.epochs, configs.lr, configs.comments) == (3, 0.5, "first try")
    assert configs.experiment == "run.exp"  # normalised to the folder name
    assert configs.replace_experiment is False
    assert configs.experiment_dir == os.path.join("experiments", "run.exp")
    assert TrainConfigs.from_arguments(*argv, show_summary=False) == configs


def test_from_arguments_reads_the_terminal_and_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["train.py", "--experiment", "digits.exp"])
    configs = TrainConfigs.from_arguments(show_summary=False)
    assert vars(configs) == {
        "epochs": 10,
        "lr": 0.01,
        "experiment": "digits.exp",
        "comments": None,
        "replace_experiment": False,
        "resume_experiment": False,
    }


def test_from_arguments_twice_with_fresh_parsers() -> None:
    # upstream's `parser=argparse.ArgumentParser()` default was one parser shared by every call,
    # so a second call failed with "conflicting option string"
    first = TrainConfigs.from_arguments([], show_summary=False)
    second = TrainConfigs.from_arguments([], show_summary=False)
    assert first == second


def test_experiment_flags_are_added_when_get_arguments_forgets_them() -> None:
    class Bare(Configs):
        epochs: int

        @staticmethod
        def get_arguments(
            parser: argparse.ArgumentParser | argparse._ArgumentGroup | None = None,
        ) -> argparse.ArgumentParser | argparse._ArgumentGroup:
            assert parser is not None
            group = parser.add_argument_group("training")
            group.add_argument("--epochs", type=int, default=1)
            return group

        def show_settings(self) -> None:
            pass

    configs = Bare.from_arguments("-exp", "bare", "--replace_experiment", show_summary=False)
    assert (configs.epochs, configs.experiment, configs.replace_experiment) == (1, "bare.exp", True)


def test_an_existing_experiment_is_kept_and_the_run_goes_to_a_numbered_folder(tmp_path: Path) -> None:
    marker = tmp_path / "experiments" / "run.exp" / "last.model"
    marker.parent.mkdir(parents=True)
    marker.write_text("weights")
    again = TrainConfigs.from_arguments(["-exp", "run"], show_summary=False)  # the same command run again
    assert again.experiment == "run-2.exp" and again.experiment_dir == os.path.join("experiments", "run-2.exp")
    assert marker.read_text() == "weights"
    (tmp_path / "experiments" / "run-2.exp").mkdir()  # an empty folder is free
    assert TrainConfigs.from_arguments(["-exp", "run"], show_summary=False).experiment == "run-2.exp"
    (tmp_path / "experiments" / "run-2.exp" / "x.log").write_text("a run")
    assert TrainConfigs.from_arguments(["-exp", "run.exp"], show_summary=False).experiment == "run-3.exp"

    resumed = TrainConfigs.from_arguments(["-exp", "run", "--resume_experiment"], show_summary=False)
    assert resumed.resume_experiment and marker.read_text() == "weights"  # kept, for Experiment(resume=True)

    TrainConfigs.from_arguments(["-exp", "run", "--replace_experiment"], show_summary=False)
    assert not marker.parent.exists()  # replaced: the Experiment callback creates it afresh


def test_only_the_launch_rank_zero_checks_the_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "experiments" / "run.exp").mkdir(parents=True)
    monkeypatch.setenv("RANK", "1")  # torchrun's second process: rank 0 owns the folder
    TrainConfigs.from_arguments(["-exp", "run", "--replace_experiment"], show_summary=False)
    assert (tmp_path / "experiments" / "run.exp").is_dir()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--epochs", "0"],
            r"`TrainConfigs\.format_arguments` rejected the configs: `epochs` must be positive\. Received: epochs=0",
        ),
        (["-exp", "../outside"], r"`experiment` must be a name .* Received: experiment='\.\./outside'"),
        (["-exp", ""], r"`experiment` must be a name .* Received: experiment=''"),
    ],
)
def test_format_arguments_errors(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigsFormatError, match=message) as info:
        TrainConfigs.from_arguments(argv, show_summary=False)
    assert isinstance(info.value, ValueError)
    assert info.value.cfg_type is TrainConfigs


def test_the_summary_is_logged_to_the_torchmanager_logger(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="torchmanager"):
        TrainConfigs.from_arguments(["--epochs", "4", "-exp", "logged", "--comments", "a note"])
    messages = [record.getMessage() for record in caplog.records if record.name == "torchmanager"]
    assert messages[:3] == ["------------Settings------------", "Experiment name: logged.exp", "epochs=4, lr=0.01"]
    assert f"torch={torch.__version__}" in messages
    assert messages[-3:] == ["------------Comments------------", "a note", "--------------------------------"]


def test_upstream_error_type_keeps_its_message() -> None:
    error = ConfigsFormatError(TrainConfigs)
    assert str(error) == "Cannot format configs to type `TrainConfigs`."
    assert error.cfg_type is TrainConfigs


# --- plain data, YAML and JSON round trips ------------------------------------------------------


def test_to_dict_is_plain_data() -> None:
    class Devices(Configs):
        device: torch.device
        sizes: tuple[int, ...] = (1, 2)

        def show_settings(self) -> None:
            pass

    configs = Devices(device=torch.device("cpu"))
    configs._fill_defaults()
    assert configs.to_dict() == {
        "device": "cpu",
        "comments": None,
        "experiment": "test.exp",
        "replace_experiment": False,
        "resume_experiment": False,
        "sizes": [1, 2],
    }
    yaml.safe_dump(configs.to_dict())  # the safe dumper accepts it


def test_terminal_configs_round_trip_through_yaml(tmp_path: Path) -> None:
    configs = TrainConfigs.from_arguments(["--epochs", "7", "-exp", "digits"], show_summary=False)
    configs.to_yaml(tmp_path / "digits.cfg")
    assert yaml.safe_load((tmp_path / "digits.cfg").read_text()) == {
        "epochs": 7,
        "lr": 0.01,
        "experiment": "digits.exp",
        "comments": None,
        "replace_experiment": False,
        "resume_experiment": False,
    }
    assert TrainConfigs.from_dict(yaml.safe_load((tmp_path / "digits.cfg").read_text())) == configs


def test_yaml_round_trip(tmp_path: Path) -> None:
    configs = YAMLRun.from_dict({**RUN, "dropout": 0.1, "tags": ["a", "b"]})
    configs.to_yaml(tmp_path / "run.yaml")
    assert yaml.safe_load((tmp_path / "run.yaml").read_text()) == {
        **RUN,
        "experiment": "run.exp",
        "dropout": 0.1,
        "tags": ["a", "b"],
        "comments": None,
        "replace_experiment": False,
        "resume_experiment": False,
    }
    loaded = YAMLRun.from_yaml(tmp_path / "run.yaml", show_summary=False)
    assert loaded == configs
    assert loaded.to_dict() == configs.to_dict()


def test_json_round_trip(tmp_path: Path) -> None:
    configs = JSONRun.from_dict(RUN)
    configs.to_json(tmp_path / "run.json")
    assert json.loads((tmp_path / "run.json").read_text()) == {
        **RUN,
        "experiment": "run.exp",
        "dropout": None,
        "tags": None,
        "comments": None,
        "replace_experiment": False,
        "resume_experiment": False,
    }
    assert JSONRun.from_json(str(tmp_path / "run.json"), show_summary=False) == configs


def test_from_experiment_reads_the_saved_cfg(tmp_path: Path) -> None:
    configs = TrainConfigs.from_arguments(["--lr", "0.2", "-exp", "saved"], show_summary=False)
    os.makedirs(configs.experiment_dir)  # what the Experiment callback does, then it writes <name>.cfg
    configs.to_yaml(os.path.join(configs.experiment_dir, "saved.cfg"))
    assert TrainConfigs.from_experiment("saved") == configs
    assert TrainConfigs.from_experiment(tmp_path / "experiments" / "saved.exp") == configs


def test_an_int_is_a_valid_float() -> None:
    configs = YAMLRun.from_dict({**RUN, "lr": 1})
    assert configs.lr == 1.0
    assert isinstance(configs.lr, float)


# --- extends ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("cls", "write", "ext"), [(YAMLRun, write_yaml, "yaml"), (JSONRun, write_json, "json")])
def test_extends_two_levels_deep_relative_to_each_file(
    cls: type[YAMLRun] | type[JSONRun], write: object, ext: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # upstream's YAML reader recursed on the child instead of the parent: two levels never ended
    assert callable(write)
    write(tmp_path / f"base.{ext}", {**RUN, "epochs": 100, "lr": 0.1, "name": "base", "milestones": [50]})
    write(tmp_path / "configs" / f"parent.{ext}", {"extends": f"../base.{ext}", "lr": 0.2, "name": "parent"})
    child = write(tmp_path / "configs" / "runs" / f"child.{ext}", {"extends": [f"../parent.{ext}"], "name": "child"})
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # paths are relative to the file, not the working dir

    loaded = cls.from_yaml(child, show_summary=False) if cls is YAMLRun else cls.from_json(child, show_summary=False)
    assert (loaded.name, loaded.lr, loaded.epochs, loaded.milestones) == ("child", 0.2, 100, [50])
    assert "extends" not in vars(loaded)


def test_the_first_parent_named_wins(tmp_path: Path) -> None:
    write_yaml(tmp_path / "a.yaml", {"lr": 0.1})
    write_yaml(tmp_path / "b.yaml", {"lr": 0.9, "epochs": 5})
    own = {key: value for key, value in RUN.items() if key not in ("lr", "epochs")}
    child = write_yaml(tmp_path / "child.yaml", {**own, "extends": ["a.yaml", "b.yaml"]})
    loaded = YAMLRun.from_yaml(child, show_summary=False)
    assert (loaded.lr, loaded.epochs) == (0.1, 5)


def test_an_extends_cycle_is_an_error(tmp_path: Path) -> None:
    write_yaml(tmp_path / "a.yaml", {"extends": "b.yaml"})
    write_yaml(tmp_path / "b.yaml", {"extends": "a.yaml"})
    with pytest.raises(
        ConfigsFormatError,
        match=r"`extends` must not form a cycle\. Received: extends chain .*a\.yaml -> .*b\.yaml -> .*a\.yaml",
    ):
        YAMLRun.from_yaml(tmp_path / "a.yaml")


def test_a_missing_parent_is_named(tmp_path: Path) -> None:
    child = write_yaml(tmp_path / "child.yaml", {"extends": "missing.yaml"})
    with pytest.raises(
        FileNotFoundError,
        match=r"Config file '.*missing\.yaml' does not exist \(named in `extends` of '.*child\.yaml'\)",
    ):
        YAMLRun.from_yaml(child)


def test_extends_must_be_paths(tmp_path: Path) -> None:
    child = write_yaml(tmp_path / "child.yaml", {"extends": 3})
    with pytest.raises(
        ConfigsFormatError,
        match=r"`extends` in '.*child\.yaml' must be a file path or a list of file paths\. Received: extends=3",
    ):
        YAMLRun.from_yaml(child)


# --- what a file may hold -----------------------------------------------------------------------


def test_unsafe_yaml_is_refused_and_runs_nothing(tmp_path: Path) -> None:
    document = "epochs: !!python/object/apply:builtins.open [{path}, w]\nlr: 0.1\n"
    # the reference: upstream's UnsafeLoader really creates the file from this document
    proof = tmp_path / "created_by_unsafe_loader"
    yaml.load(document.format(path=proof), Loader=yaml.UnsafeLoader)["epochs"].close()
    assert proof.exists()

    target = tmp_path / "pwned"
    config = tmp_path / "evil.yaml"
    config.write_text(document.format(path=target))
    with pytest.raises(
        ConfigsFormatError,
        match=r"Config file '.*evil\.yaml' uses a YAML tag that is not plain data \(could not determine a constructor "
        r"for the tag 'tag:yaml\.org,2002:python/object/apply:builtins\.open'\); configs are read with `yaml\.safe_load`",
    ):
        YAMLRun.from_yaml(config)
    assert not target.exists()


def test_an_unknown_key_names_the_key_the_file_and_the_fields(tmp_path: Path) -> None:
    parent = write_yaml(tmp_path / "parent.yaml", {**RUN, "lrr": 0.1})
    child = write_yaml(tmp_path / "child.yaml", {"extends": "parent.yaml"})
    with pytest.raises(
        ConfigsFormatError,
        match=rf"Config key `lrr` in '{parent}' is not a field of `YAMLRun`; the fields are comments, dropout, epochs, "
        r"experiment, lr, milestones, name, replace_experiment, resume_experiment, tags, use_amp\. Received: lrr=0\.1",
    ):
        YAMLRun.from_yaml(child)


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("lr", "fast", "float"),
        ("epochs", 3.5, "int"),
        ("epochs", True, "int"),
        ("use_amp", 1, "bool"),
        ("name", 7, "str"),
        ("milestones", [1, "2"], r"list\[int\]"),
        ("milestones", 1, r"list\[int\]"),
        ("dropout", "high", r"Optional\[float\]"),
        ("tags", [1], r"list\[str\] \| None"),
    ],
)
@pytest.mark.parametrize(("cls", "write", "ext"), [(YAMLRun, write_yaml, "yaml"), (JSONRun, write_json, "json")])
def test_a_wrong_type_names_the_key_the_file_and_the_type(
    cls: type[YAMLRun] | type[JSONRun], write: object, ext: str, key: str, value: object, expected: str, tmp_path: Path
) -> None:
    assert callable(write)
    path = write(tmp_path / f"run.{ext}", {**RUN, key: value})
    with pytest.raises(
        ConfigsFormatError, match=rf"Config key `{key}` in '{path}' must be of type {expected}\. Received: {key}="
    ):
        cls.from_yaml(path) if cls is YAMLRun else cls.from_json(path)


def test_a_field_without_default_must_be_given(tmp_path: Path) -> None:
    path = write_yaml(tmp_path / "run.yaml", {key: value for key, value in RUN.items() if key != "epochs"})
    with pytest.raises(ConfigsFormatError, match=r"`YAMLRun` needs a value for `epochs`, which has no default"):
        YAMLRun.from_yaml(path)


def test_a_file_must_hold_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "list.json"
    path.write_text("[1, 2]")
    with pytest.raises(
        ConfigsFormatError,
        match=r"Config file '.*list\.json' must hold a mapping of field names to values\. Received: list",
    ):
        JSONRun.from_json(path)


def test_from_yaml_checks_the_experiment_folder(tmp_path: Path) -> None:
    (tmp_path / "experiments" / "run.exp").mkdir(parents=True)
    (tmp_path / "experiments" / "run.exp" / "run.log").write_text("an earlier run")
    path = write_yaml(tmp_path / "run.yaml", RUN)
    assert YAMLRun.from_yaml(path).experiment == "run-2.exp"  # the earlier run is kept
    # on the terminal, `--replace_experiment` overrides the file
    configs = YAMLRun.from_arguments([str(path), "--replace_experiment"], show_summary=False)
    assert configs.replace_experiment is True
    assert not (tmp_path / "experiments" / "run.exp").exists()


# --- PyYAML is optional -------------------------------------------------------------------------


def test_missing_pyyaml_says_how_to_install_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_yaml(tmp_path / "run.yaml", RUN)
    configs = JSONRun.from_dict(RUN)
    monkeypatch.setitem(sys.modules, "yaml", None)  # `import yaml` now raises ImportError
    install = r'YAML configs need PyYAML, the optional extra `yaml`: pip install "torchmanager-core\[yaml\]"'
    with pytest.raises(ImportError, match=install):
        YAMLRun.from_yaml(path)
    with pytest.raises(ImportError, match=install):
        configs.to_yaml(tmp_path / "out.yaml")
    configs.to_json(tmp_path / "out.json")  # JSON needs nothing
    assert JSONRun.from_json(tmp_path / "out.json", show_summary=False) == configs


def test_importing_configs_does_not_import_yaml() -> None:
    code = "import sys, torchmanager_core.configs; assert 'yaml' not in sys.modules, 'yaml imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_json_configs_from_the_terminal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_json(tmp_path / "run.json", {**RUN, "epochs": 9})
    monkeypatch.setattr(sys, "argv", ["train.py", str(path)])
    configs = JSONRun.from_arguments(show_summary=False)
    assert (configs.epochs, configs.experiment, configs.replace_experiment) == (9, "run.exp", False)


def test_a_local_annotation_is_unchecked_and_the_others_still_are() -> None:
    class Schedule:  # local: `typing.get_type_hints` cannot resolve it from the module
        pass

    class LocalRun(YAMLConfigs):
        schedule: Schedule
        epochs: int

        def show_settings(self) -> None:
            pass

    assert LocalRun.from_dict({"schedule": "cosine", "epochs": 2}).schedule == "cosine"  # for format_arguments
    with pytest.raises(ConfigsFormatError, match=r"Config key `epochs` in 'the given dict' must be of type int"):
        LocalRun.from_dict({"schedule": "cosine", "epochs": "2"})
