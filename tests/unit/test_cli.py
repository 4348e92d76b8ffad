"""The ``rtp`` commands: every ``--help`` lists its options, a bad command line is a
usage line and exit 2 (never a traceback), and the output is quiet by default."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from beam_pipelines import console
from rtp import cli

REPO = Path(__file__).resolve().parents[2]
# One option each command must list in its --help.
OPTIONS = {
    "simulate": "--publish-topic",
    "stream": "--input_subscription",
    "backfill": "--events",
    "items": "--input_subscription",
    "train": "--serving-k",
    "evaluate": "--variants",
    "serve": "--store-path",
    "demo": "--no-stream",
    "replay-dead-letters": "--store_config",
    "experiment": "report",
}
# A bad command line per command: a missing required option, an unknown flag, a bad value.
BAD = {
    "simulate": ["--events", "many"],
    "stream": [],
    "backfill": ["--out", "x"],
    "items": ["--items", "no-such-catalogue.csv", "--out", "x"],
    "train": ["--events", "e.jsonl", "--out", "m", "--bogus"],
    "evaluate": ["--events", "e.jsonl"],
    "serve": ["--models", "m", "--port", "eighty"],
    "demo": ["--seed", "one"],
    "replay-dead-letters": ["no-such-dir"],
    "experiment": ["fly"],
}
TF_LINE = ("I0000", "W0000", "E0000", "absl::", "oneDNN", "cuda", "cuInit", "tensorflow")


@pytest.fixture(autouse=True)
def logging_restored(monkeypatch: pytest.MonkeyPatch):
    """``cli.main`` configures logging and may set ``RTP_VERBOSE``: undone after each test."""
    monkeypatch.setenv(console.VERBOSE_ENV, "")  # not verbose; unset again after the test
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    levels = {name: logging.getLogger(name).level for name in console.OWN_LOGGERS}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, own in levels.items():
        logging.getLogger(name).setLevel(own)


def run_rtp(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m rtp ARGS`` from the repository root (its modules first)."""
    env = {k: v for k, v in os.environ.items() if k != console.VERBOSE_ENV}
    return subprocess.run(
        [sys.executable, "-m", "rtp", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_every_command_has_a_help_case_and_a_bad_case() -> None:
    assert set(OPTIONS) == set(BAD) == set(cli.COMMANDS)


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_help_lists_the_command_options(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main([name, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: rtp {name} ")
    assert OPTIONS[name] in out


def test_stream_help_lists_the_pipeline_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["stream", "--help"])
    out = capsys.readouterr().out
    for option in ("--input_subscription", "--input_topic", "--dead_letter_dir", "--store_path"):
        assert option in out
    assert "--runner" in out  # Beam's own options: named, passed through


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_arguments_exit_2_with_a_usage_line(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main([name, *BAD[name]])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"usage: rtp {name} ")
    assert f"rtp {name}: error: " in err
    assert "Traceback" not in err


def test_stream_without_arguments_names_what_is_missing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["stream"])
    assert exit_info.value.code == 2
    assert "give exactly one of --input_subscription or --input_topic" in capsys.readouterr().err


def test_no_command_or_an_unknown_one_is_usage_and_exit_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main([]) == 2
    assert capsys.readouterr().err.startswith("usage: rtp ")
    assert cli.main(["straem"]) == 2
    err = capsys.readouterr().err
    assert "unknown command 'straem'" in err and "usage: rtp " in err
    assert cli.main(["--help"]) == 0
    assert "--verbose" in capsys.readouterr().out


def test_stream_as_a_process_without_arguments_is_a_usage_line_not_a_traceback() -> None:
    done = run_rtp("stream")
    assert done.returncode == 2
    assert done.stderr.startswith("usage: rtp stream ")
    assert "Traceback" not in done.stderr


def test_train_help_prints_no_line_from_tensorflow() -> None:
    done = run_rtp("train", "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: rtp train ")
    noise = [line for line in (done.stdout + done.stderr).splitlines() if line.startswith(TF_LINE)]
    assert not noise and not done.stderr, done.stderr


def test_train_help_does_not_import_tensorflow() -> None:
    code = (
        "import sys\n"
        "from rtp import cli\n"
        "try:\n"
        "    cli.main(['train', '--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print('tensorflow' in sys.modules, file=sys.stderr)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.stderr.strip() == "False", done.stderr


def test_quiet_logging_drops_library_info_and_keeps_ours(
    caplog: pytest.LogCaptureFixture,
) -> None:
    console.configure_logging(verbose=False)
    logging.getLogger("apache_beam.typehints").info("Converting string literal type hint")
    logging.getLogger("feast.infra.registry").info("Registry cache expired")
    logging.getLogger("feast.infra.registry").warning("a real warning")
    logging.getLogger("beam_pipelines.streaming").info("our own line")
    assert [r.getMessage() for r in caplog.records] == ["a real warning", "our own line"]


def test_verbose_logging_keeps_library_info(caplog: pytest.LogCaptureFixture) -> None:
    console.configure_logging(verbose=True, level=logging.WARNING)
    logging.getLogger("feast.infra.registry").info("Registry cache expired")
    logging.getLogger("models.train").info("our own line")
    assert [r.getMessage() for r in caplog.records] == ["Registry cache expired", "our own line"]


def test_verbose_flag_reaches_the_environment_of_child_processes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        cli.main(["--verbose", "simulate", "--help"])
    assert console.verbose_requested()
    assert os.environ[console.VERBOSE_ENV] == "1"


def test_tensorflow_banners_are_dropped_and_other_lines_kept() -> None:
    code = (
        "import os\n"
        "from serving.quiet import banners_dropped\n"
        "with banners_dropped():\n"
        "    os.write(2, b'WARNING: All log messages before absl::InitializeLog() is called\\n')\n"
        "    os.write(2, b'I0000 port.cc:153] oneDNN custom operations are on.\\n')\n"
        "    os.write(2, b'I0000 cudart_stub.cc:31] Could not find cuda drivers\\n')\n"
        "    os.write(2, b'a real problem\\n')\n"
        "os.write(2, b'after\\n')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.stderr == "a real problem\nafter\n"


def test_keras_draws_a_bar_only_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    import models

    monkeypatch.setattr(sys.stdout, "isatty", lambda: False, raising=False)
    assert models.fit_verbosity() == 2  # one line per epoch
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True, raising=False)
    assert models.fit_verbosity() == 1  # the progress bar


def test_progress_off_a_terminal_is_one_line_per_stage(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from models.evaluation.progress import progress

    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    assert list(progress(range(5), "replay")) == [0, 1, 2, 3, 4]
    err = capsys.readouterr().err
    assert "\r" not in err
    assert err.startswith("replay: 5 ev in ") and err.count("\n") == 1


def test_an_unknown_log_level_is_an_error_naming_it() -> None:
    with pytest.raises(ValueError, match="unknown log level 'LOUD'"):
        console.configure_logging(level="loud")


def test_serve_log_level_is_checked_at_the_edge(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["serve", "--models", "m", "--log-level", "loud"])
    assert exit_info.value.code == 2
    assert "argument --log-level: invalid choice: 'loud'" in capsys.readouterr().err


def test_the_streaming_module_run_directly_exits_2_too(capsys: pytest.CaptureFixture[str]) -> None:
    from beam_pipelines import streaming

    with pytest.raises(SystemExit) as exit_info:
        streaming.main(["--input_topic", "projects/p/topics/t"])
    assert exit_info.value.code == 2
    assert "dead letters need a home" in capsys.readouterr().err


def test_verbose_among_the_command_arguments_is_taken_out(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["simulate", "--help", "--verbose"])
    assert exit_info.value.code == 0
    assert console.verbose_requested()


@pytest.mark.parametrize(
    ("name", "argv", "message"),
    [
        ("backfill", ["--events", "/no/log.jsonl"], "no event log matches '/no/log.jsonl'"),
        ("train", ["--events", "/no/ratings.csv"], "no event log matches '/no/ratings.csv'"),
        ("backfill", ["--reward", "nosuch"], "reward config 'nosuch' is neither a preset"),
    ],
)
def test_a_missing_log_or_an_unknown_reward_is_a_usage_error(
    name: str, argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text("")
    module = {"backfill": "beam_pipelines.backfill", "train": "rtp.jobs.train"}[name]
    main = __import__(module, fromlist=["main"]).main
    with pytest.raises(SystemExit) as exit_info:
        main(["--events", str(events), "--out", str(tmp_path / "out"), *argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"usage: rtp {name} ") and message in err


def test_backfill_online_into_sqlite_on_other_machines_dask_workers_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each remote worker would write a SQLite file of its own: refused, saying why.
    Workers on this machine, or a networked store, are fine."""
    from beam_pipelines import backfill

    workers: set[str] = {"10.9.8.7"}
    monkeypatch.setattr(backfill, "remote_worker_hosts", lambda address: set(workers))
    events = tmp_path / "events.jsonl"
    events.write_text("")
    dask = ["--runner", "DaskRunner", "--dask_address", "10.9.8.1:8786", "--online"]
    argv = ["--events", str(events), "--out", str(tmp_path / "out"), *dask]
    with pytest.raises(SystemExit) as exit_info:
        backfill.main([*argv, "--store_path", str(tmp_path / "online.db")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "needs every Dask worker on this machine" in err and "10.9.8.7" in err

    redis = tmp_path / "redis.yaml"
    redis.write_text("type: redis\nconnection_string: 10.9.8.2:6379\n")
    assert backfill.unreachable_store(backfill.parser().parse_args(argv)) is not None
    with_redis = [*argv, "--store_config", str(redis)]
    assert backfill.unreachable_store(backfill.parser().parse_args(with_redis)) is None
    workers.clear()
    assert backfill.unreachable_store(backfill.parser().parse_args(argv)) is None


def test_sigterm_unwinds_a_command_like_ctrl_c() -> None:
    """``kill PID`` runs the command's ``finally`` blocks (servers stopped by pid)."""
    import signal
    import subprocess
    import sys

    code = """
import argparse, sys, time, types
from rtp import cli
module = types.ModuleType("sleeper")
def main(argv):
    try:
        print("ready", flush=True)
        time.sleep(60)
    finally:
        print("cleaned up", flush=True)
module.main, module.parser = main, argparse.ArgumentParser
sys.modules["sleeper"] = module
cli.COMMANDS["sleep"] = cli.Command("sleeper", "sleep")
sys.exit(cli.main(["sleep"]))
"""
    process = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None and process.stdout.readline().strip() == "ready"
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    finally:
        process.kill()
    assert "cleaned up" in out, err
    assert process.returncode == 128 + signal.SIGTERM
