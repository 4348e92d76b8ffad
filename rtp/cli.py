"""The ``rtp`` console script (also ``python -m rtp``): one subcommand per job,
each imported lazily so that ``rtp simulate`` does not pay for TensorFlow and
``rtp stream`` stays light.

A command's arguments are parsed before anything heavy is imported: ``--help``
and a bad argument (usage line, exit 2) never wait for TensorFlow. Output is
quiet by default (``beam_pipelines.console``); ``rtp --verbose <command>`` (or
``--verbose`` among the command's arguments) brings every library's logs back.
"""

from __future__ import annotations

import importlib
import logging
import signal
import sys
import threading
from typing import NamedTuple

from beam_pipelines.console import configure_logging, request_verbose

VERBOSE_FLAGS = ("-v", "--verbose")


class Command(NamedTuple):
    module: str
    """Module with ``main(argv) -> int``."""
    help: str
    args_module: str | None = None
    """Light module with the command's ``parse_args(argv)`` or ``parser()``, when
    ``module`` itself imports TensorFlow (default: ``module``)."""
    tensorflow: bool = False
    """The command imports TensorFlow: done up front, its banners dropped."""


COMMANDS: dict[str, Command] = {
    "simulate": Command("rtp.simulator.cli", "Write or publish a simulated engagement stream."),
    "stream": Command(
        "beam_pipelines.streaming", "Run the streaming feature job (Pub/Sub → store)."
    ),
    "backfill": Command(
        "beam_pipelines.backfill", "Run the same transforms over a bounded event log."
    ),
    "replay-dead-letters": Command(
        "beam_pipelines.replay_dead_letters",
        "Write again the rows a store outage left as dead letters.",
    ),
    "items": Command(
        "beam_pipelines.item_job",
        "Encode item content (catalogue or Pub/Sub) into item_content and the item table.",
    ),
    "train": Command(
        "rtp.jobs.train",
        "Train and export the retrieval and ranking models.",
        args_module="models.train_args",
        tensorflow=True,
    ),
    "evaluate": Command(
        "rtp.jobs.evaluate",
        "Replay evaluation of every variant on real data.",
        args_module="models.evaluation.cli",
        tensorflow=True,
    ),
    "experiment": Command(
        "beam_pipelines.experiments.cli", "Experiments: report (lifts, SRM), metrics (Parquet)."
    ),
    "serve": Command("serving.app", "Run the recommendation HTTP service.", tensorflow=True),
    "demo": Command(
        "rtp.demo.run",
        "Simulate, train, stream; recommendations before and after a shift "
        "(--experiment: an A/B through the closed loop).",
        tensorflow=True,
    ),
}


def usage() -> str:
    lines = ["usage: rtp [--verbose] <command> [options]", "", "commands:"]
    width = max(map(len, COMMANDS))
    lines += [f"  {name:<{width}} {command.help}" for name, command in COMMANDS.items()]
    lines += [
        "",
        "options:",
        "  -h, --help     show this message",
        "  -v, --verbose  every library's logs (Beam, Feast, TensorFlow), not only warnings",
        "",
        "rtp <command> --help shows a command's options.",
    ]
    return "\n".join(lines)


def parse_command_args(command: Command, argv: list[str]) -> None:
    """Parse ``argv`` as the command will: ``--help`` and bad arguments exit here."""
    module = importlib.import_module(command.args_module or command.module)
    if hasattr(module, "parse_args"):
        module.parse_args(argv)
    else:
        module.parser().parse_args(argv)


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    verbose = False
    while args and args[0] in VERBOSE_FLAGS:
        verbose, args = True, args[1:]
    if not args or args[0] in ("-h", "--help"):
        print(usage(), file=sys.stdout if args else sys.stderr)
        return 0 if args else 2
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"rtp: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    if "--verbose" in rest:
        verbose, rest = True, [a for a in rest if a != "--verbose"]
    if verbose:
        request_verbose()
    configure_logging(level=logging.WARNING)  # a command's main may ask for more
    command = COMMANDS[name]
    parse_command_args(command, rest)
    if command.tensorflow and not verbose:
        from serving.quiet import import_tensorflow

        import_tensorflow()
    # SIGTERM (``kill PID``, a supervisor stopping the command) unwinds like Ctrl-C:
    # ``finally`` blocks run, so the emulators and servers a command started are
    # stopped by pid instead of outliving it. ``rtp serve`` installs uvicorn's own.
    if (
        threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    ):
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
    module = importlib.import_module(command.module)
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
