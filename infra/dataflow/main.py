"""Flex Template entry point (FLEX_TEMPLATE_PYTHON_PY_FILE) of the streaming job.

The launcher calls ``python main.py --<parameter>=<value> ... --runner=DataflowRunner
--project=... --setup_file=/template/setup.py ...``. This submits the job and
returns: a streaming job never finishes, and waiting would hold the launcher VM.

Two defaults of the template that the plain ``rtp stream`` does not have:

- ``--store_config``: the store config baked into the image (``STORE_CONFIG``),
  never the embedded SQLite, which on Dataflow would be one file per worker;
- ``--sdk_container_image``: this image (``RTP_SDK_CONTAINER_IMAGE``, set at build
  time), so workers run the code and dependencies the graph was built with.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

IMAGE_ENV = "RTP_SDK_CONTAINER_IMAGE"
STORE_CONFIG = Path(__file__).resolve().parent / "generated" / "store.yaml"


def with_defaults(argv: list[str], defaults: dict[str, str | None]) -> list[str]:
    """``argv`` plus ``--name=value`` for each default whose option is not given."""
    given = {a.split("=", 1)[0] for a in argv if a.startswith("--")}
    extra = [f"{name}={value}" for name, value in defaults.items() if value and name not in given]
    return [*argv, *extra]


def template_defaults() -> dict[str, str | None]:
    return {
        "--store_config": str(STORE_CONFIG) if STORE_CONFIG.exists() else None,
        "--sdk_container_image": os.environ.get(IMAGE_ENV),
    }


def main(argv: list[str] | None = None) -> int:
    from beam_pipelines.streaming import run

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = sys.argv[1:] if argv is None else argv
    run(with_defaults(args, template_defaults()), wait=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
