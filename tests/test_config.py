"""Every config composes; the schema names misspelt keys and wrong types."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from mtl.errors import ConfigError
from mtl.tasks import parse_task_specs

CONF = Path(__file__).resolve().parents[1] / "conf"
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
TASKS = sorted(p.stem for p in (CONF / "task").glob("*.yaml"))


def compose_train(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("train", overrides=["paths.output_dir=/tmp/unused", *overrides])


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_and_its_tasks_validate(experiment):
    cfg = compose_train(f"experiment={experiment}")
    OmegaConf.resolve(cfg)
    specs = parse_task_specs(cfg.task)
    assert specs and all(s.type in ("regression", "classification", "mlm") for s in specs.values())


@pytest.mark.parametrize("task", TASKS)
def test_every_task_file_is_keyed_by_its_file_name(task):
    cfg = compose_train(f"task=[{task}]")
    assert list(cfg.task) == [task]
    parse_task_specs(cfg.task)


@pytest.mark.parametrize(
    "group", ["sampler", "encoder", "optimizer", "scheduler", "trainer", "logger", "callbacks"]
)
def test_every_group_option_composes(group):
    for option in sorted(p.stem for p in (CONF / group).glob("*.yaml")):
        compose_train(f"{group}={option}")


def test_misspelt_key_names_the_key():
    with pytest.raises(ConfigCompositionException, match="poolng"):
        compose_train("encoder.poolng=mean")
    with pytest.raises(ConfigCompositionException, match="optimizer.lr"):
        compose_train("optimizer.lr=fast")


def test_task_spec_errors_name_task_and_key(tmp_path):
    with pytest.raises(ConfigCompositionException, match=r"label_colum"):
        compose_train("task.demo_sentiment.label_colum=x")
    cfg = compose_train("+task.demo_sentiment.label_colum=x")  # '+' opens the schema...
    with pytest.raises(ConfigError, match=r"task\.demo_sentiment\.label_colum"):
        parse_task_specs(cfg.task)  # ...and the task check still names the key
    with pytest.raises(ConfigCompositionException, match=r"task.demo_complexity.loss_weight"):
        compose_train("task.demo_complexity.loss_weight=heavy")
    assert compose_train("task.demo_complexity.loss_weight=2").task.demo_complexity.loss_weight == 2
    (tmp_path / "task").mkdir()
    (tmp_path / "task" / "typo.yaml").write_text("typo:\n  type: regression\n  fil: a.csv\n")
    cfg = compose_train(f"hydra.searchpath=[file://{tmp_path}]", "task=[typo]")
    with pytest.raises(ConfigError, match=r"task\.typo\.fil"):  # a task file without the
        parse_task_specs(cfg.task)  # schema default is checked when the run starts
    with pytest.raises(ConfigError, match=r"task\.sst2\.labels"):
        parse_task_specs({"sst2": {"type": "classification", "file": "x", "labels": 3}})
    cfg = compose_train("task.demo_complexity.type=ranking")  # any registered kind's name
    unknown = r"task\.demo_complexity\.type: unknown task kind 'ranking' \(known: .*classification, .*regression, .*mtl\.task_kinds"
    with pytest.raises(ConfigError, match=unknown):
        parse_task_specs(cfg.task)


def test_a_key_the_kind_does_not_have_is_an_unknown_key():
    with pytest.raises(ConfigCompositionException) as refused:
        compose_train("task.demo_sentiment.range=[1,7]")  # a regression key
    assert "full_key: task.demo_sentiment.range" in str(refused.value.__cause__)
    cfg = compose_train("+task.demo_sentiment.range=[1,7]")
    with pytest.raises(
        ConfigError, match=r"task\.demo_sentiment\.range: unknown key of classification tasks"
    ):
        parse_task_specs(cfg.task)
    assert compose_train("task.demo_complexity.range=[0,9]").task.demo_complexity.range == [0, 9]


def test_a_whole_task_can_be_given_on_the_command_line():
    cfg = compose_train("+task.inline={type: regression, file: x.csv, label_column: y}")
    spec = parse_task_specs(cfg.task)["inline"]
    assert spec.file == "x.csv" and spec.label_column == "y" and spec.loss_weight == 1.0
    with pytest.raises(ConfigError, match=r"task\.inline\.labl: "):
        parse_task_specs(compose_train("+task.inline={type: regression, file: x, labl: y}").task)


def test_data_root_comes_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("MTL_DATA_ROOT", str(tmp_path))
    cfg = compose_train("experiment=complexity_sentiment")
    assert cfg.task.sst2.files.train == f"{tmp_path}/sst2/train.tsv"
    monkeypatch.delenv("MTL_DATA_ROOT")
    cfg = compose_train("experiment=complexity_sentiment", "data.root=/elsewhere")
    assert cfg.task.complexity_de.file == "/elsewhere/TextComplexityDE19/ratings.csv"
