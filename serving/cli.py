"""The ``rtp`` console script: one subcommand per job, each imported lazily so that
``rtp simulate`` does not pay for TensorFlow and ``rtp stream`` stays light."""

from __future__ import annotations

import importlib
import sys

# subcommand → (module with ``main(argv) -> int``, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "simulate": ("beam_pipelines.simulator", "Write or publish a simulated engagement stream."),
    "stream": ("beam_pipelines.streaming", "Run the streaming feature job (Pub/Sub → store)."),
    "backfill": ("beam_pipelines.backfill", "Run the same transforms over a bounded event log."),
    "train": ("models.train", "Train and export the retrieval and ranking models."),
    "evaluate": ("models.evaluation.cli", "Replay evaluation of every variant on real data."),
    "serve": ("serving.app", "Run the recommendation HTTP service."),
    "demo": ("serving.demo", "Simulate, train, stream; recommendations before and after a shift."),
}


def usage() -> str:
    lines = ["usage: rtp <command> [options]", "", "commands:"]
    lines += [f"  {name:<10} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "rtp <command> --help shows a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print(usage())
        return 0 if args else 2
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"rtp: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
