"""The application layer (``rtp/``) is the only place that chains jobs (README,
*Layout*): read from the source, no package below it imports ``rtp``, ``models``
starts no Beam job, and the evaluation does not run the training itself."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from rtp.cli import COMMANDS

REPO = Path(__file__).resolve().parents[2]
LOWER = ("models", "beam_pipelines", "serving", "feature_repo")
# The Beam jobs' entry points: what the rtp commands run, and the job behind
# ``rtp experiment``. Shared code (events, rewards, state, event_logs) is not here.
BEAM_JOBS = (
    "beam_pipelines.backfill",
    "beam_pipelines.streaming",
    "beam_pipelines.item_job",
    "beam_pipelines.replay_dead_letters",
    "beam_pipelines.experiment_job",
    "beam_pipelines.experiments.cli",
)


def imported(source: str, module: str) -> Iterator[tuple[int, str]]:
    """(line, module) for each import in ``source``, at any depth (lazy imports
    too); ``from a import b`` gives both ``a`` and ``a.b``. ``module``: the dotted
    name of the file, to resolve relative imports."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".")[: -node.level]
                base = ".".join([*package, base] if base else package)
            yield node.lineno, base
            yield from ((node.lineno, f"{base}.{alias.name}") for alias in node.names)


def imports_of(package: str) -> Iterator[tuple[str, int, str]]:
    """(file, line, module) for every import in every file of ``package``."""
    for path in sorted((REPO / package).rglob("*.py")):
        relative = path.relative_to(REPO)
        module = ".".join(relative.with_suffix("").parts)
        for line, name in imported(path.read_text(encoding="utf-8"), module):
            yield str(relative), line, name


def within(name: str, modules: tuple[str, ...]) -> bool:
    return any(name == m or name.startswith(f"{m}.") for m in modules)


def offending(package: str, forbidden: tuple[str, ...]) -> list[str]:
    return [
        f"{f}:{line} {name}" for f, line, name in imports_of(package) if within(name, forbidden)
    ]


def test_the_checker_sees_plain_lazy_and_relative_imports() -> None:
    source = "import rtp.cli\ndef f():\n    from models import train\nfrom ..train import fit\n"
    found = {name for _, name in imported(source, "models.evaluation.neural")}
    assert {"rtp.cli", "models.train", "models.train.fit"} <= found
    assert not within("models.train_args", ("models.train",))


@pytest.mark.parametrize("package", LOWER)
def test_no_package_below_the_app_imports_rtp(package: str) -> None:
    assert offending(package, ("rtp",)) == []


def test_models_start_no_beam_job() -> None:
    assert offending("models", BEAM_JOBS) == []


def test_every_beam_command_is_counted_a_job() -> None:
    modules = {c.module for c in COMMANDS.values() if c.module.startswith("beam_pipelines.")}
    assert modules <= set(BEAM_JOBS)
    assert all(REPO.joinpath(*m.split(".")).with_suffix(".py").is_file() for m in BEAM_JOBS)


def test_the_evaluation_does_not_run_the_training() -> None:
    assert offending("models/evaluation", ("models.train", "beam_pipelines.backfill")) == []


def test_rtp_commands_that_chain_jobs_live_in_rtp() -> None:
    assert COMMANDS["train"].module.startswith("rtp.")
    assert COMMANDS["evaluate"].module.startswith("rtp.")


def test_the_evaluation_without_a_trainer_asks_for_a_model_base(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from models.evaluation import cli

    events = tmp_path / "ratings.csv"
    rows = [(1, 1, 4, 1), (2, 1, 5, 2), (1, 2, 4, 3), (2, 2, 3, 4), (3, 1, 4, 5)]
    events.write_text(
        "user,item,rating,timestamp\n" + "".join(f"{u},{i},{r},{t}\n" for u, i, r, t in rows)
    )
    argv = ["--events", str(events), "--format", "movielens", "--out", str(tmp_path / "out")]
    assert cli.main([*argv, "--variants", "two_tower_static", "--no-progress"]) == 2
    assert "need --model-base or a trainer" in capsys.readouterr().err
