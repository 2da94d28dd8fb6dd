"""The `saelab` command line end to end on the tiny model: harvest → train → eval, and clear errors."""

from __future__ import annotations

import json

import pytest

from saelab.cli import main
from saelab.errors import SaelabError


def test_cli__harvest_train_eval_on_tiny_model(tmp_path, capsys):
    acts, sae = tmp_path / "acts", tmp_path / "sae"
    assert (
        main(
            [
                "harvest",
                "--model",
                "tiny",
                "--hooks",
                "blocks.0.hook_resid_post",
                "--tokens",
                "8192",
                "--out",
                str(acts),
            ]
        )
        == 0
    )
    assert (acts / "manifest.json").exists()
    # a second run reuses every shard
    assert (
        main(
            [
                "harvest",
                "--model",
                "tiny",
                "--hooks",
                "blocks.0.hook_resid_post",
                "--tokens",
                "8192",
                "--out",
                str(acts),
            ]
        )
        == 0
    )
    assert "shard(s) reused" in capsys.readouterr().out
    args = [
        "train",
        "--acts",
        str(acts),
        "--d-sae",
        "96",
        "--k",
        "8",
        "--batch-size",
        "256",
        "--epochs",
        "1",
        "--out",
        str(sae),
    ]
    assert main(args) == 0
    assert (sae / "cfg.json").exists() and (sae / "saelab.json").exists()
    assert (
        main(["eval", "--sae", str(sae), "--model", "tiny", "--tokens", "1024", "--seq-len", "64", "--batch-size", "8"])
        == 0
    )
    ev = json.loads((sae / "eval.json").read_text())
    assert ev["l0"] == pytest.approx(8.0, abs=1e-6)
    assert "ce_loss_score_zero" in ev["formulas"]


def test_cli__unknown_hook_is_a_clear_error(tmp_path, capsys):
    code = main(
        [
            "harvest",
            "--model",
            "tiny",
            "--hooks",
            "blocks.9.hook_nope",
            "--tokens",
            "1024",
            "--out",
            str(tmp_path / "a"),
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "Unknown hook point" in err and "blocks.0.hook_resid_post" in err


def test_cli__train_on_missing_harvest_is_a_clear_error(tmp_path, capsys):
    assert main(["train", "--acts", str(tmp_path / "none")]) == 2
    assert "No harvest" in capsys.readouterr().err


def test_cli__parse_latents_ranges_and_lists():
    from saelab.cli import parse_latents

    assert parse_latents("0:3,7, 2") == [0, 1, 2, 7]
    with pytest.raises(SaelabError, match="not an index"):
        parse_latents("a:b")


def test_cli__llm_labels_unreachable_endpoint_fails_fast_and_writes_nothing(tmp_path, capsys):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sae = tmp_path / "sae"
    sae.mkdir()
    code = main(
        ["llm-labels", "--sae", str(sae), "--base-url", f"http://127.0.0.1:{port}/v1", "--llm-model", "m",
         "--timeout", "2"]
    )  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert "Cannot reach" in err and "Nothing was written" in err
    assert list(sae.iterdir()) == []


def test_terminal_bar__follows_the_callback_and_closes(capsys):
    from saelab.progress import terminal_bar

    with terminal_bar("job", "step") as progress:
        progress(0, 4)
        progress(3, 4)
    err = capsys.readouterr().err
    assert "job" in err and "3/4" in err


def test_cli__every_command_named_in_docs_and_messages_exists():
    """README, docs and in-app messages tell users to run `saelab X`: every X must be a real subcommand."""
    import re
    from pathlib import Path

    from saelab.cli import build_parser

    root = Path(__file__).resolve().parents[1]
    files = [root / "README.md", *root.glob("docs/*.md"), *root.glob("pages/*.py"), *root.glob("saelab/**/*.py")]
    named: dict[str, str] = {}
    for path in files:
        for m in re.finditer(r"(?m)(?:^|`|\"|')saelab ([a-z][a-z-]+)", path.read_text(encoding="utf-8")):
            named.setdefault(m.group(1), str(path.relative_to(root)))
    assert {"dashboards", "steer", "probe"} <= set(named)
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    missing = {cmd: where for cmd, where in named.items() if cmd not in sub.choices}
    assert not missing, f"commands named but not registered: {missing}"
    for cmd in named:
        with pytest.raises(SystemExit) as exit_info:
            parser.parse_args([cmd, "--help"])
        assert exit_info.value.code == 0
