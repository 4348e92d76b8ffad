"""``python -m rtp.tfserving_standin --model-config MODEL_BASE/models.config
--grpc-port P [--rest-port Q] [--delay-s D] [--delay-file F]``: serve until SIGTERM."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading

from rtp.tfserving_standin.server import Servables, grpc_server, rest_app


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="tfserving_standin", description=__doc__)
    p.add_argument("--model-config", required=True, help="TF Serving models.config file.")
    p.add_argument("--grpc-port", type=int, required=True)
    p.add_argument("--rest-port", type=int, help="Also serve the REST API on this port.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--delay-s", type=float, default=0.0, help="Sleep before every Predict.")
    p.add_argument("--delay-file", help="Read the delay (seconds) from this file, if it exists.")
    args = p.parse_args(argv)
    servables = Servables(args.model_config, args.delay_s, args.delay_file)
    server = grpc_server(servables, args.grpc_port, args.host)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    if args.rest_port:
        import uvicorn

        config = uvicorn.Config(
            rest_app(servables), host=args.host, port=args.rest_port, log_level="warning"
        )
        rest = uvicorn.Server(config)
        thread = threading.Thread(target=rest.run, daemon=True)
        thread.start()
    with contextlib.suppress(KeyboardInterrupt):
        stop.wait()
    server.stop(grace=1).wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
