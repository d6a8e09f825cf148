"""The command line: one registration mechanism, one convention, and docs/CLI.md equal to --help.

Every subcommand's ``--help`` is produced here (in process) and compared with the reference in
docs/CLI.md in both directions; the conventions (``-o/--output`` for outputs, ``--json FILE``,
one spelling per shared option) are checked on the parser itself.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from consistbench.benchmark import cli

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "CLI.md"


def _reference_module():
    spec = importlib.util.spec_from_file_location("cli_reference", ROOT / "docs" / "cli_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def commands():
    return list(cli.iter_commands(cli.build_parser()))


@pytest.fixture(scope="module")
def doc_sections() -> dict[str, str]:
    """docs/CLI.md's reference, one text per command heading."""
    text = DOC.read_text(encoding="utf-8")
    parts = re.split(r"(?m)^### `consistbench ([^`]+)`\s*$", text)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts), 2)}


def _help_text(path: tuple[str, ...], capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        cli.main([*path, "--help"])
    assert exc.value.code == 0
    return capsys.readouterr().out


def _options_in_help(text: str) -> set[str]:
    return set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*|-[a-z])\b", text))


def test_every_command_comes_from_an_entry_point():
    names = {ep.name for ep in entry_points(group=cli.ENTRY_POINT_GROUP)}
    top = {path[0] for path, _ in cli.iter_commands(cli.build_parser()) if len(path) == 1}
    assert top == names
    assert {"eval", "score", "compare", "ref", "merge", "leaderboard", "data", "retrieval", "doctor"} <= names


def test_docs_reference_is_generated_from_the_parser():
    ref = _reference_module()
    assert ref.updated(DOC.read_text(encoding="utf-8")) == DOC.read_text(encoding="utf-8"), \
        "docs/CLI.md is out of date: run python docs/cli_reference.py"


def test_help_of_every_command_agrees_with_the_docs(commands, doc_sections, capsys):
    assert set(doc_sections) == {" ".join(p) for p, _ in commands}
    for path, sub in commands:
        help_text = _help_text(path, capsys)
        section = doc_sections[" ".join(path)]
        rows = [line.split("|")[1] for line in section.splitlines() if line.startswith("| `")]
        documented = {o for row in rows for o in re.findall(r"`(--[a-z][a-z0-9-]*|-[a-z])`", row)}
        in_help = _options_in_help(help_text) - {"-h", "--help"}
        # every documented option is one --help shows
        assert documented <= in_help | {o.replace("-", "_") for o in in_help}, (path, documented - in_help)
        if not sub.get_default("passthrough"):
            # and every option of a plain command is documented (dataclass commands document their own fields)
            options = {s for a in sub._actions for s in a.option_strings if s not in ("-h", "--help")}
            assert options <= documented, (path, options - documented)


def test_conventions(commands):
    forbidden = {"--output-dir", "--out-dir", "--output-path", "--run-dir", "--seed-bootstrap"}
    for path, sub in commands:
        if sub.get_default("passthrough"):
            continue  # TrainingArguments' own output_dir is the checkpoint folder there
        strings = {s for a in sub._actions for s in a.option_strings}
        assert not strings & forbidden, (path, strings & forbidden)
        for action in sub._actions:
            if "--json" in action.option_strings:
                assert action.nargs is None and action.metavar == "FILE", (path, "--json must take a file")
            if "--output" in action.option_strings:
                assert "-o" in action.option_strings, path
            if "-o" in action.option_strings:
                assert "--output" in action.option_strings, path
        if path in (("compare",), ("score",), ("eval",)):
            assert {"--n-resamples", "--bootstrap-seed", "--rs-threshold", "--bs-model"} <= strings, path


def test_dataclass_commands_share_their_lora_and_model_flags(commands):
    parsers = {p[-1]: cli.leaf_parser(s) for p, s in commands if s.get_default("passthrough")}
    assert set(parsers) == {"train", "wrpo", "mrpo"}
    shared = {"--use-lora", "--lora-r", "--lora-alpha", "--lora-dropout", "--lora-target-modules", "--lora-layers",
              "--trust-remote-code", "--allow-pad-eq-eos", "--config", "--output", "-o", "--seed", "--learning-rate"}
    for name, parser in parsers.items():
        strings = {s for a in parser._actions for s in a.option_strings}
        assert shared <= strings, (name, shared - strings)


def test_eval_help_has_no_cpu_default(capsys):
    text = _help_text(("eval",), capsys)
    entry = " ".join(re.search(r"\n  --device DEVICE\s+(.*?)\n  -", text, re.S).group(1).split())
    default = entry.split("default", 1)[1]
    assert "cpu" not in default.lower() and "lm-eval's choice" in default, entry
    p = next(s for path, s in cli.iter_commands(cli.build_parser()) if path == ("eval",))
    assert p.get_default("device") is None


def test_dataclass_command_reads_a_config_file_and_flags_override_it(tmp_path):
    from consistbench.reference_method.training_cli import train_dataclasses

    yaml_file = tmp_path / "train.yaml"
    yaml_file.write_text("alpha: 0.25\nlearning_rate: 0.001\nmining_negatives: hard\nuse_lora: true\n")
    script, config, mining = cli.parse_dataclasses(
        "consistbench ref train", train_dataclasses(),
        ["--config", str(yaml_file), "--variant-type", "how_to", "--data", "d.jsonl", "-o", "out",
         "--learning-rate", "0.01"])
    assert script.output == "out" and script.variant_type == "how_to"
    assert config.alpha == 0.25 and config.learning_rate == 0.01 and config.use_lora is True
    assert mining.to_config().negatives == "hard"


@pytest.mark.parametrize("argv, expect", [
    (["ref", "train", "--variant-type", "how_to", "--data", "d", "-o", "o", "--alpha", "-1"], "alpha must be >= 0"),
    (["ref", "train", "--variant-type", "how_to", "--data", "d", "-o", "o", "--config", "/nonexistent.yaml"],
     "no such file"),
    (["score", "x.jsonl", "--rs-threshold", "1.5"], "--rs-threshold must lie in [0, 1]"),
])
def test_bad_settings_are_one_line_errors(argv, expect, capsys):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("consistbench: error:") and expect in err and len(err.strip().splitlines()) == 1


def test_unknown_option_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["score", "x.jsonl", "--bootstrap-sed", "3"])
    assert exc.value.code == 2
    assert "unrecognized arguments" in capsys.readouterr().err


def test_parser_help_strings_are_formattable(commands):
    # argparse formats %-placeholders in help strings; a stray % breaks --help at run time
    for path, sub in commands:
        if not sub.get_default("passthrough"):
            sub.format_help()
        assert isinstance(sub, argparse.ArgumentParser), path
