"""Typed configuration (issue 13): the CLI generated from RunConfig's metadata, --config files (a
run directory's config.json repeats the run), one validation function, --version, --log-level and
the exit codes. No model is loaded here."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path

import pytest

from refusalkit import __version__, cli
from refusalkit.cli import ExitCode, build_parser, config_from_args, main
from refusalkit.config import (
    ADVERSARIAL_CONDITIONS,
    COMMAND_GROUPS,
    JUDGES,
    SELECTORS,
    STEERINGS,
    RunConfig,
    config_from_dict,
    option_specs,
    read_config_file,
    validate,
)
from refusalkit.errors import RefusalkitError
from refusalkit.evaluation.verdict import EXIT_NO_WORKING_DIRECTION
from refusalkit.io import write_json
from refusalkit.selection.cosmic import CosmicSettings


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """main() reconfigures logging; leave the process as it was for the other tests."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    libraries = {name: logging.getLogger(name).level for name in cli._LIBRARY_LOGGERS}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, saved in libraries.items():
        logging.getLogger(name).setLevel(saved)


def _config(*argv: str) -> RunConfig:
    return config_from_args(build_parser().parse_args(list(argv)))


def _unusual() -> RunConfig:
    """Every kind of field away from its default: a round trip must keep all of them."""
    return RunConfig(
        model="smollm2-135m-instruct", harmful="h.txt", column="goal", system_prompt="be brief",
        selector="refusal-substring", steering="ace", n_train=7, n_val=3, n_test=5,
        max_new_tokens=4, batch_size=2, seed=11, dtype="float32", trust_remote_code=True,
        l_low_fraction=0.3, l_low_second_half=True, l_low_layers=[1, 2], aggregation="concat",
        prune_layer_fraction=0.0, min_layer=1, kl_threshold=2.5, induce_threshold=-1.0,
        median_peak_filter=False, judge="log-odds", n_over_refusal=0, adversarial_prompt="val",
        alphas=[0.5, 2.0], stability=2,
    )  # fmt: skip


# --- --config files ------------------------------------------------------------------------------


def test_a_run_directorys_config_json_gives_back_the_same_config(tmp_path: Path) -> None:
    config = _unusual()
    path = tmp_path / "config.json"
    write_json(path, config.as_dict())  # as the run directory writes it
    assert _config("run", "--config", str(path)) == config
    assert RunConfig.from_dict(json.loads(path.read_text())) == config


def test_the_defaults_round_trip_and_a_wrapped_config_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    write_json(path, RunConfig().as_dict())
    assert _config("run", "--config", str(path)) == RunConfig() == _config("run")
    write_json(path, {"config": _unusual().as_dict(), "workflow": "run"})
    assert _config("run", "--config", str(path)) == _unusual()


def test_toml_file(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text(
        'model = "smollm2-135m-instruct"\nn_train = 5\nkl_threshold = 1\nalphas = [1, 2.5]\n'
        'median_peak_filter = false\nl_low_layers = [3]\nadversarial_prompt = "train+val"\n'
    )
    config = _config("run", "--config", str(path))
    assert (config.model, config.n_train, config.kl_threshold) == ("smollm2-135m-instruct", 5, 1.0)
    assert isinstance(config.kl_threshold, float) and config.alphas == [1.0, 2.5]
    assert not config.median_peak_filter and config.l_low_layers == [3]
    assert config.adversarial_prompt == "train+val" and config.n_val == RunConfig().n_val


def test_command_line_options_override_the_file(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text(
        'n_train = 5\nn_val = 6\nselector = "refusal-score"\nl_low_second_half = true\n'
    )
    config = _config("run", "--config", str(path), "--n-train", "9", "--selector", "cosmic")
    assert (config.n_train, config.n_val, config.selector) == (9, 6, "cosmic")
    assert config.l_low_second_half  # a switch not given keeps the file's value
    # --paper is a command-line option too: it beats the file, an explicit size beats it.
    paper = _config("run", "--config", str(path), "--paper", "--n-val", "4")
    assert (paper.n_train, paper.n_val) == (180, 4)
    switched = _config("run", "--config", str(path), "--no-median-peak-filter")
    assert not switched.median_peak_filter and switched.n_train == 5


def test_compare_ignores_the_settings_it_chooses_itself(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    write_json(path, _unusual().as_dict())
    config = _config("compare", "--config", str(path))
    default = RunConfig()
    assert (config.selector, config.steering, config.stability, config.alphas) == (
        default.selector, default.steering, default.stability, default.alphas,
    )  # fmt: skip
    assert config.n_train == 7 and config.aggregation == "concat"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("n_trian = 5\n", "unknown setting 'n_trian'; did you mean 'n_train'?"),
        ("out = 'x'\n", "unknown setting 'out'"),
        ('n_train = "5"\n', "'n_train' must be an integer (got '5')"),
        ("n_train = true\n", "'n_train' must be an integer"),
        ("alphas = 2\n", "'alphas' must be a list of numbers"),
        ('l_low_layers = [1, "a"]\n', "'l_low_layers' must be a list of integers or null"),
        ("n_train = [\n", "invalid TOML"),
        ('selector = "sideways"\n', "invalid selector 'sideways': use cosmic, refusal-score"),
        ("n_test = 0\n", "--n-test must be at least 1 (got 0)"),
    ],
)
def test_a_bad_config_file_is_a_one_line_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    path = tmp_path / "run.toml"
    path.write_text(text)
    out = tmp_path / "out"
    code = main(["run", "--config", str(path), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == ExitCode.USAGE == 2
    assert message in err and err.count("\n") == 1, err
    assert not out.exists()


def test_config_file_errors(tmp_path: Path) -> None:
    with pytest.raises(RefusalkitError, match="config file not found"):
        read_config_file(tmp_path / "nope.toml")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(RefusalkitError, match="expected a table of settings"):
        read_config_file(tmp_path / "list.json")
    (tmp_path / "bad.json").write_text('{"n_train": ')
    with pytest.raises(RefusalkitError, match="invalid JSON"):
        read_config_file(tmp_path / "bad.json")
    # Without a telling suffix, JSON is recognised by its brace and anything else is TOML.
    (tmp_path / "settings").write_text('{"seed": 4}')
    assert read_config_file(tmp_path / "settings") == {"seed": 4}
    (tmp_path / "settings.cfg").write_text("seed = 4\n")
    assert read_config_file(tmp_path / "settings.cfg") == {"seed": 4}


# --- the generated parser ------------------------------------------------------------------------


def _help(capsys: pytest.CaptureFixture[str], command: str) -> str:
    with pytest.raises(SystemExit):
        build_parser().parse_args([command, "--help"])
    return capsys.readouterr().out


def test_every_option_comes_from_a_field(capsys: pytest.CaptureFixture[str]) -> None:
    specs = option_specs()
    names = {item.name for item in fields(RunConfig)}
    assert {spec.name for spec in specs} == names - {"min_layer"}  # not an option
    helps = {command: _help(capsys, command) for command in ("run", "compare", "harmfulness",
                                                             "geometry")}  # fmt: skip
    run_help = helps["run"]
    for spec in specs:  # each option is on exactly the commands whose groups hold it
        for command, text in helps.items():
            shown = spec.option.group in COMMAND_GROUPS[command] and (
                command == "run" or not spec.option.run_only
            )
            assert (f"{spec.option.flag} " in text or f"{spec.option.flag}\n" in text) == shown, (
                spec.name, command,
            )  # fmt: skip
    assert "--guard-tau" in helps["harmfulness"] and "--selector" not in helps["harmfulness"]
    assert "--categories" in helps["geometry"] and "--guard-tau" not in helps["geometry"]
    by_name = {spec.name: spec for spec in specs}
    assert by_name["selector"].choices == SELECTORS
    assert by_name["steering"].choices == STEERINGS
    assert by_name["judge"].choices == JUDGES
    assert by_name["adversarial_prompt"].choices == ADVERSARIAL_CONDITIONS
    assert "(default 64)" in run_help and "(default 1,2,3)" in run_help


def test_parsed_options_give_the_same_config_as_the_dataclass() -> None:
    assert _config("run") == RunConfig()
    assert _config("compare") == RunConfig()
    config = _config(
        "run", "--selector", "refusal-score", "--l-low-layers", "2,3", "--alphas", "1,4",
        "--trust-remote-code", "--n-over-refusal", "0", "--judge-model-kind", "guard",
    )  # fmt: skip
    assert config == RunConfig(
        selector="refusal-score", l_low_layers=[2, 3], alphas=[1.0, 4.0],
        trust_remote_code=True, n_over_refusal=0, judge_model_kind="guard",
    )  # fmt: skip


# --- validation ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"selector": "x"}, "invalid selector 'x': use cosmic, refusal-score, refusal-substring"),
        ({"steering": "x"}, "invalid steering 'x': use lce or ace"),
        ({"aggregation": "x"}, "invalid aggregation 'x': use mean or concat"),
        ({"judge": "x"}, "invalid judge 'x': use substring, log-odds, model"),
        ({"judge": "model"}, "--judge model needs --judge-model PATH"),
        ({"judge_model_kind": "x"}, "invalid judge model kind 'x': use yes-no or guard"),
        ({"dtype": "float8"}, "invalid dtype 'float8': use auto, float32, bfloat16, float16"),
        ({"adversarial_prompt": "x"}, "invalid --adversarial-prompt 'x': use none, val, train+val"),
        ({"weak_alignment": "x"}, "invalid --weak-alignment 'x': use none, two-stage, direct"),
        ({"kl_threshold": -1.0}, "the KL threshold must be non-negative"),
        ({"kl_threshold": float("nan")}, "--kl-threshold must be a finite number"),
        ({"l_low_fraction": 0.0}, "the L_low fraction must be in (0, 1]"),
        ({"prune_layer_fraction": 1.0}, "the prune-layer fraction must be in [0, 1)"),
        ({"n_val": 0}, "--n-val must be at least 1 (got 0)"),
        ({"alphas": [1e9]}, "--alphas: 1000000000.0 is not a strength"),
        ({"system_prompt": " "}, "empty system prompt"),
        ({"adversarial_prompt": "val", "adversarial_text": ""}, "empty system prompt"),
        ({"stability": 2, "selector": "refusal-score"}, "--stability re-runs COSMIC selection"),
        ({"weak_alignment": "direct", "selector": "refusal-score"}, "selects with COSMIC"),
        ({"weak_alignment": "direct", "alphas": []}, "--alphas needs one or more finite numbers"),
    ],
)
def test_validate_is_the_one_place_of_every_check(changes: dict, message: str) -> None:
    validate(RunConfig())
    with pytest.raises(RefusalkitError) as error:
        validate(config_from_dict(changes))
    assert message in str(error.value)


def test_cosmic_settings_share_the_checks() -> None:
    with pytest.raises(RefusalkitError, match="invalid steering 'x': use lce or ace"):
        CosmicSettings(steering="x")  # type: ignore[arg-type]
    with pytest.raises(RefusalkitError, match="KL threshold must be non-negative"):
        CosmicSettings(kl_threshold=-1.0)


# --- --version, --log-level, exit codes ----------------------------------------------------------


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == ExitCode.OK
    assert capsys.readouterr().out.strip() == f"refusalkit {__version__}"


def test_exit_codes_are_distinct(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch):
    codes = [ExitCode.OK, ExitCode.CRASH, ExitCode.USAGE, ExitCode.NO_WORKING_DIRECTION,
             ExitCode.INTERRUPTED, ExitCode.TERMINATED]  # fmt: skip
    assert len(set(codes)) == len(codes) == len(ExitCode)
    assert ExitCode.NO_WORKING_DIRECTION == EXIT_NO_WORKING_DIRECTION == 3
    # A usage error (argparse) and a RefusalkitError (bad input) are both the user's to fix.
    assert main(["run", "--steering", "sideways"]) == ExitCode.USAGE
    assert "invalid choice" in capsys.readouterr().err
    assert main(["run", "--config", str(tmp_path / "nope.toml")]) == ExitCode.USAGE
    assert "config file not found" in capsys.readouterr().err
    # An exception nobody expected is a crash: its own status, and the traceback is kept.

    def broken(_args: object) -> RunConfig:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(cli, "config_from_args", broken)
    assert main(["run"]) == ExitCode.CRASH == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "ZeroDivisionError: a bug" in err and "internal error" in err


def test_log_level(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models"]) == ExitCode.OK
    # The default: refusalkit's own notes, the libraries' errors only.
    assert logging.getLogger().level == logging.INFO
    assert logging.getLogger("transformers").level == logging.ERROR
    assert main(["--log-level", "warning", "models"]) == ExitCode.OK
    assert logging.getLogger().level == logging.WARNING
    assert logging.getLogger("transformers").level == logging.WARNING
    assert main(["models", "--log-level", "debug"]) == ExitCode.OK  # after the command too
    assert logging.getLogger("huggingface_hub").level == logging.DEBUG
    assert main(["--log-level", "loud", "models"]) == ExitCode.USAGE
    assert "invalid choice" in capsys.readouterr().err


def test_log_level_reaches_transformers_after_its_import() -> None:
    """transformers resets its logger's level when imported; the CLI sets it again."""
    from transformers.utils import logging as transformers_logging

    before = transformers_logging.get_verbosity()
    try:
        cli._configure_transformers("warning", quiet=False)
        assert transformers_logging.get_verbosity() == logging.WARNING
        cli._configure_transformers(None, quiet=False)
        assert transformers_logging.get_verbosity() == logging.ERROR
    finally:
        transformers_logging.set_verbosity(before)


def test_a_run_repeated_from_its_config_json_is_the_same_run(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The resume key holds every setting: resuming from config.json alone proves it is exact."""
    out = tmp_path / "run"
    small = ["--n-train", "6", "--n-val", "3", "--n-test", "3", "--max-new-tokens", "3",
             "--kl-threshold", "1000", "--seed", "5", "--aggregation", "concat"]  # fmt: skip
    first = main(["run", "--model", str(model_dir), *small, "--quiet", "--out", str(out)])
    assert first in (ExitCode.OK, ExitCode.NO_WORKING_DIRECTION)
    (out / "summary.json").unlink()  # as if interrupted after the last stage
    capsys.readouterr()
    again = main(["run", "--config", str(out / "config.json"), "--quiet", "--out", str(out)])
    err = capsys.readouterr().err
    assert again == first and "resuming the unfinished run" in err, err


def test_a_retired_empty_setting_of_an_older_config_json_is_dropped():
    older = {**RunConfig().as_dict(), "extra": {}}
    assert RunConfig.from_dict(older) == RunConfig()
    with pytest.raises(RefusalkitError, match="unknown setting 'extra'"):
        RunConfig.from_dict({**RunConfig().as_dict(), "extra": {"note": 1}})
