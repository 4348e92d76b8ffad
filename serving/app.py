"""``rtp serve``: the recommendation HTTP service (FastAPI on uvicorn).

    GET  /v1/recommendations?user_id=U[&k=K][&surface=S]   ranked items, model version,
                                                          feature age, fallback taken,
                                                          request id, experiment, variant
    POST /v1/events                                       validated, published to Pub/Sub
    GET  /healthz   the process answers (no token needed)
    GET  /readyz    200 while something can be served (the store answers, or a popular
                    list exists), "degraded" when a component is not ok; 503 otherwise
    GET  /metrics   Prometheus
    GET  /openapi.json   this API's OpenAPI 3.1 document (``serving.openapi``)

Errors are JSON ``{"error": code, "message": text}``; a bad request is a 4xx that
names the offending parameter or limit. With a token configured every endpoint
but ``/healthz`` needs ``Authorization: Bearer <token>``.

Every recommendation has a ``request_id`` (UUID4 hex) and the user's ``experiment``
and ``variant`` (null outside experiments; ``beam_pipelines.experiments``). With a
Pub/Sub topic, each shown item is published as an exposure event
(``serving.exposures``), off the request path.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import functools
import hmac
import json
import logging
import os
import re
import sys
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from beam_pipelines.console import configure_logging, verbose_requested
from beam_pipelines.events import MAX_ID_CHARS
from beam_pipelines.experiments.assignment import NONE, Assigner, Assignment
from feature_repo.store import DEFAULT_SQLITE_PATH
from serving.admission import Admission
from serving.catalog import resolve_version
from serving.config import SQLITE_TIMEOUT_S, TOKEN_ENV, ServingConfig, load_serving_config
from serving.events import EventsRejected, PublishError, validate_body
from serving.exposures import ExposureLog, Shown
from serving.metrics import ServingMetrics
from serving.openapi import OPENAPI_PATH, openapi_document
from serving.recommender import NothingToServe, Recommendation
from serving.service import Service

LOG = logging.getLogger(__name__)
RECOMMEND_PARAMS = frozenset({"user_id", "k", "surface"})
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
RECOMMENDATIONS = "/v1/recommendations"
_ROUTES = (RECOMMENDATIONS, "/v1/events", "/healthz", "/readyz", "/metrics", OPENAPI_PATH)
OPEN_ROUTES = frozenset({"/healthz"})
CONFIG_ENV = "RTP_SERVE_CONFIG_JSON"  # the config handed to worker processes


class FastJSONResponse(JSONResponse):
    """``JSONResponse`` rendered by orjson: ~10x cheaper than ``json.dumps`` for a
    top-k list; the same compact JSON (floats in shortest round-trip form; a NaN
    becomes ``null`` where ``json.dumps`` would fail the request)."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


class BadRequest(Exception):
    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(message)
        self.status, self.error, self.message = status, error, message


def can_serve(status: dict[str, str]) -> tuple[bool, bool]:
    """``(ready, degraded)`` of a readiness status. Something can be served while
    the store answers (the models' answer, or the embedding fallback when the
    model server is down) or while a popular list exists (cold users, a store
    outage); degraded: some component is not ok."""
    ready = status.get("store") == "ok" or status.get("popular") == "ok"
    return ready, ready and not all(v == "ok" for v in status.values())


def error_response(status: int, error: str, message: str, **extra: Any) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"error": error, "message": message, **extra}, status, headers=headers)


def _check_id(name: str, value: str) -> str:
    if not value:
        raise BadRequest(400, "invalid_parameter", f"{name} must not be empty")
    if len(value) > MAX_ID_CHARS:
        raise BadRequest(
            400, "invalid_parameter", f"{name} has {len(value)} characters, at most {MAX_ID_CHARS}"
        )
    if _CONTROL.search(value):
        raise BadRequest(400, "invalid_parameter", f"{name} contains control characters")
    return value


def recommendation_params(request: Request, default_k: int, max_k: int) -> tuple[str, int, str]:
    """(user_id, k, surface) of a recommendations request, or ``BadRequest``."""
    params = request.query_params
    unknown = sorted(set(params) - RECOMMEND_PARAMS)
    if unknown:
        raise BadRequest(
            400,
            "unknown_parameter",
            f"unknown query parameter(s) {unknown}; allowed: {sorted(RECOMMEND_PARAMS)}",
        )
    repeated = sorted(n for n in params if len(params.getlist(n)) > 1)
    if repeated:
        raise BadRequest(400, "repeated_parameter", f"parameter(s) {repeated} given more than once")
    if "user_id" not in params:
        raise BadRequest(400, "missing_parameter", "user_id is required")
    user_id = _check_id("user_id", params["user_id"])
    surface = _check_id("surface", params["surface"]) if "surface" in params else ""
    k = default_k
    if "k" in params:
        text = params["k"]
        if not re.fullmatch(r"[+-]?\d{1,9}", text.strip()):
            raise BadRequest(400, "invalid_parameter", f"k must be an integer, got {text[:20]!r}")
        k = int(text)
    if not 1 <= k <= max_k:
        raise BadRequest(400, "invalid_parameter", f"k must be between 1 and {max_k}, got {k}")
    return user_id, k, surface


def recommendation_body(
    result: Recommendation,
    surface: str,
    k: int,
    request_id: str | None = None,
    assignment: Assignment = NONE,
) -> dict[str, Any]:
    return {
        "request_id": request_id,
        "user_id": result.user_id,
        "surface": surface or None,
        "k": k,
        "items": [
            {"item_id": r.item_id, "score": round(r.score, 6), "source": r.source}
            for r in result.items
        ],
        "model_version": result.model_version,
        "feature_age_s": None if result.feature_age_s is None else round(result.feature_age_s, 3),
        "fallback": result.fallback,
        "fallback_reason": result.reason,
        "fallback_detail": result.detail,
        "experiment": assignment.experiment,
        "variant": assignment.variant,
    }


def shown(result: Recommendation, request_id: str, surface: str, assignment: Assignment) -> Shown:
    return Shown(
        request_id,
        result.user_id,
        tuple(r.item_id for r in result.items),
        tuple(r.source for r in result.items),
        int(time.time() * 1000),
        surface or None,
        assignment.experiment,
        assignment.variant,
    )


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The body, or ``BadRequest(413)`` as soon as it passes ``max_bytes``."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise BadRequest(413, "body_too_large", f"body of {declared} bytes > {max_bytes}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise BadRequest(413, "body_too_large", f"body larger than {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


class GuardMiddleware:
    """Pure ASGI (no per-request task): bearer token check and the latency histogram."""

    def __init__(self, app: ASGIApp, token: str | None, metrics: ServingMetrics) -> None:
        self.app = app
        self.token = token.encode() if token else None
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        path = scope["path"]
        route = path if path in _ROUTES else "other"
        status = {"code": 500}

        async def send_and_record(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            if self.token is not None and path not in OPEN_ROUTES and not self._authorized(scope):
                response = error_response(401, "unauthorized", "missing or wrong bearer token")
                await response(scope, receive, send_and_record)
            else:
                await self.app(scope, receive, send_and_record)
        finally:
            self.metrics.request_seconds.labels(route, f"{status['code'] // 100}xx").observe(
                time.perf_counter() - started
            )

    def _authorized(self, scope: Scope) -> bool:
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, credentials = value.partition(b" ")
                return scheme.lower() == b"bearer" and hmac.compare_digest(
                    credentials.strip(), self.token or b""
                )
        return False


class AdmissionMiddleware:
    """Pure ASGI, in front of the app's routing: a recommendation request takes a
    worker (``serving.admission``) or is shed with a ready-made 503 ``overloaded``
    and ``Retry-After`` before any per-request work (routing, parameters, a task),
    so shedding stays cheap when most requests are shed."""

    def __init__(
        self, app: ASGIApp, admission: Admission, metrics: ServingMetrics, retry_after_s: int
    ) -> None:
        self.app = app
        self.admission = admission
        self.shed_count = metrics.errors.labels("overloaded")
        body = orjson.dumps(
            {
                "error": "overloaded",
                "message": f"more than {admission.workers} requests running and "
                f"{admission.max_waiting} waiting, or a wait over "
                f"{admission.max_wait_s * 1000:g} ms; retry later",
            }
        )
        self.shed_start: Message = {
            "type": "http.response.start",
            "status": 503,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", str(retry_after_s).encode()),
            ],
        }
        self.shed_body: Message = {"type": "http.response.body", "body": body}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["path"] != RECOMMENDATIONS
            or scope["method"] not in ("GET", "HEAD")
        ):
            await self.app(scope, receive, send)
            return
        verdict = self.admission.admit()
        if verdict is not True and verdict is not False:
            try:
                verdict = await verdict
            except asyncio.CancelledError:
                if verdict.done() and not verdict.cancelled() and verdict.result():
                    self.admission.release()
                raise
        if not verdict:
            self.shed_count.inc()
            await send(self.shed_start)
            await send(self.shed_body)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self.admission.release()


def create_app(config: ServingConfig, service: Service | None = None) -> FastAPI:
    """The ASGI app; the service starts with the app's lifespan and stops with it."""
    metrics = service.metrics if service is not None else ServingMetrics()
    service = service or Service(config, metrics)
    limits = config.limits

    # Recommendations run on a pool of their own (``limits.workers`` threads): a
    # plain executor hop costs a fraction of anyio's ``to_thread`` (limiter, cancel
    # scope), and the store and model calls may block, so not on the event loop.
    pool: dict[str, concurrent.futures.ThreadPoolExecutor] = {}
    assigner = Assigner(config.experiments) if config.experiments is not None else None
    exposures: dict[str, ExposureLog] = {}  # "log" once started with a publisher

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        pool["recommend"] = concurrent.futures.ThreadPoolExecutor(
            limits.workers, thread_name_prefix="recommend"
        )
        await run_in_threadpool(service.start)
        if service.publisher is not None and config.exposures.enabled:
            exposures["log"] = ExposureLog(
                service.publisher.publish_batch, metrics, config.exposures
            )
            exposures["log"].start()
        try:
            yield
        finally:
            if "log" in exposures:
                await run_in_threadpool(exposures.pop("log").stop)
            await run_in_threadpool(service.stop)
            pool.pop("recommend").shutdown(wait=False, cancel_futures=True)

    app = FastAPI(
        title="rtp recommendations",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=OPENAPI_PATH,
    )
    document = openapi_document(limits, token=config.token is not None)
    app.openapi = lambda: document  # type: ignore[method-assign]
    app.state.service = service

    @app.exception_handler(BadRequest)
    async def bad_request(_: Request, e: BadRequest) -> JSONResponse:
        metrics.errors.labels(e.error).inc()
        return error_response(e.status, e.error, e.message)

    @app.exception_handler(404)
    async def not_found(request: Request, _: Exception) -> JSONResponse:
        return error_response(404, "not_found", f"no route {request.url.path}")

    @app.exception_handler(405)
    async def not_allowed(request: Request, e: Exception) -> JSONResponse:
        response = error_response(405, "method_not_allowed", f"{request.method} {request.url.path}")
        response.headers.update(getattr(e, "headers", None) or {})  # Allow (RFC 9110)
        return response

    async def recommendations(request: Request) -> JSONResponse:
        user_id, k, surface = recommendation_params(request, limits.default_k, limits.max_k)
        assert service.recommender is not None
        assignment = assigner.assign(user_id) if assigner is not None else NONE
        recommend = functools.partial(
            service.recommender.recommend, user_id, k, assignment.overrides
        )
        try:
            result = await asyncio.get_running_loop().run_in_executor(pool["recommend"], recommend)
        except NothingToServe as e:
            metrics.errors.labels("nothing_to_serve").inc()
            return error_response(503, "unavailable", str(e))
        if result.fallback is not None:
            metrics.fallbacks.labels(result.fallback, result.reason or "").inc()
        request_id = uuid.uuid4().hex
        log = exposures.get("log")
        if log is not None and result.items:
            log.offer(shown(result, request_id, surface, assignment))
        return FastJSONResponse(recommendation_body(result, surface, k, request_id, assignment))

    # A plain Starlette route: the hot path skips FastAPI's per-request dependency
    # resolution (it has no parameters to inject; they are validated above).
    app.add_route(RECOMMENDATIONS, recommendations, methods=["GET"])

    @app.post("/v1/events")
    async def events(request: Request) -> JSONResponse:
        body = await read_body(request, limits.max_body_bytes)
        try:
            parsed = validate_body(body, limits.max_events)
        except EventsRejected as e:
            for r in e.rejected:
                metrics.events.labels(r.reason).inc()
            first = e.rejected[0]
            rejected = [
                {"index": r.index, "reason": r.reason, "detail": r.detail} for r in e.rejected
            ]
            return error_response(
                400, "invalid_event", f"{first.reason}: {first.detail}", rejected=rejected
            )
        if service.publisher is None:
            return error_response(
                503, "events_disabled", "no Pub/Sub topic configured (start with --pubsub-topic)"
            )
        try:
            ids = await service.publisher.publish(parsed)
        except PublishError as e:
            metrics.errors.labels("publish_failed").inc()
            return error_response(503, "publish_failed", str(e))
        metrics.events.labels("published").inc(len(ids))
        return JSONResponse({"accepted": len(ids), "message_ids": ids}, 202)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        status = await run_in_threadpool(service.readiness)
        ready, degraded = can_serve(status)
        return JSONResponse({"ready": ready, "degraded": degraded, **status}, 200 if ready else 503)

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    admission = Admission(limits.workers, limits.max_waiting, limits.max_wait_ms / 1000)
    metrics.in_flight.set_function(lambda: admission.in_flight)
    app.add_middleware(
        AdmissionMiddleware,
        admission=admission,
        metrics=metrics,
        retry_after_s=limits.retry_after_s,
    )
    token = config.token.get_secret_value() if config.token else None
    app.add_middleware(GuardMiddleware, token=token, metrics=metrics)
    return app


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rtp serve", description="Run the recommendation service.")
    p.add_argument("--models", required=True, help="Model base (rtp train --out).")
    p.add_argument("--host", default="127.0.0.1", help="Listen address (default: loopback).")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--store-config", help="Online store YAML (default: SQLite at --store-path).")
    p.add_argument(
        "--store-path",
        help=f"SQLite online store (default: {DEFAULT_SQLITE_PATH}, where rtp stream and "
        "rtp backfill --online write, unless --config names a store).",
    )
    p.add_argument(
        "--model-backend",
        choices=("inprocess", "grpc", "rest"),
        help="Where the models run (default: inprocess, or as in --config).",
    )
    p.add_argument("--tfserving", help="TF Serving address: host:port (gRPC) or URL (REST).")
    p.add_argument("--model-version", type=int, help="Pin this model version.")
    p.add_argument("--token", help=f"Bearer token (or set {TOKEN_ENV}); default: no token.")
    p.add_argument("--pubsub-topic", help="projects/P/topics/T for POST /v1/events.")
    p.add_argument("--experiments", help="Experiments YAML (beam_pipelines.experiments.config).")
    p.add_argument(
        "--new-items",
        metavar="DIR",
        help="Item table of rtp items (<out>/items): recommend uploads newer than the model "
        "version by content (the config's new_items section for the other settings).",
    )
    p.add_argument("--config", help="Full serving config YAML; the flags above override it.")
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="Server processes (each loads the models; /metrics is per process).",
    )
    p.add_argument(
        "--log-level",
        type=str.lower,
        default="info",
        choices=("critical", "error", "warning", "info", "debug"),
        help="Of the service's own logs and uvicorn's (others: warnings unless rtp --verbose).",
    )
    return p


def config_from_args(args: argparse.Namespace) -> ServingConfig:
    """The typed config: ``--config`` (if any), then the flags on top."""
    from feature_repo.store import load_store_config, sqlite_settings

    data: dict[str, Any] = {}
    if args.config:
        data = load_serving_config(args.config).model_dump(exclude_unset=True)
    data["model_base"] = args.models
    models = dict(data.get("models") or {})
    if args.model_backend is not None and args.model_backend != models.get("type"):
        models = {"type": args.model_backend}  # settings of another backend do not carry over
    models.setdefault("type", "inprocess")
    if args.tfserving:
        if models["type"] == "inprocess":
            raise ValueError("--tfserving needs --model-backend grpc or rest")
        key = "url" if models["type"] == "rest" else "address"
        value = args.tfserving
        if key == "url" and "://" not in value:
            value = f"http://{value}"
        models[key] = value
    if args.model_version is not None:
        models["version"] = args.model_version
    data["models"] = models
    if args.store_config and args.store_path:
        raise ValueError("give --store-config or --store-path, not both")
    if args.store_config:
        data["store"] = load_store_config(args.store_config)
    elif args.store_path:
        data["store"] = {**sqlite_settings(args.store_path), "timeout_s": SQLITE_TIMEOUT_S}
    token = args.token or os.environ.get(TOKEN_ENV)
    if token:
        data["token"] = token
    if args.pubsub_topic:
        data["pubsub_topic"] = args.pubsub_topic
    if args.new_items:
        data["new_items"] = {**(data.get("new_items") or {}), "table_path": args.new_items}
    if args.experiments:
        from beam_pipelines.experiments.config import load_experiments_config

        data["experiments"] = load_experiments_config(args.experiments)
    return load_serving_config(data)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(sys.argv[1:] if argv is None else argv)
    configure_logging(level=args.log_level)
    try:
        config = config_from_args(args)
        resolve_version(config.model_base, config.models.version)
    except (ValueError, OSError, LookupError) as e:
        print(f"rtp serve: {e}", file=sys.stderr)
        return 2
    import uvicorn

    from serving import workers

    options = {"log_level": args.log_level.lower(), "access_log": False}
    if args.workers <= 1:
        uvicorn.run(create_app(config), host=args.host, port=args.port, **options)
        return 0
    # Worker processes import the app by name and read the validated config from the
    # environment: one GIL per process, so the Python part of requests runs in parallel.
    data = config.model_dump(mode="json")
    data["token"] = config.token.get_secret_value() if config.token else None
    os.environ[CONFIG_ENV] = json.dumps(data)
    app = "serving.app:app_from_env"
    if workers.reuse_port_available(args.port):
        return workers.run(app, args.host, args.port, args.workers, options)
    uvicorn.run(app, factory=True, workers=args.workers, host=args.host, port=args.port, **options)
    return 0


def app_from_env() -> FastAPI:
    """The app of a worker process started by ``main(["--workers", N, ...])``."""
    if not verbose_requested():  # a fresh process: TensorFlow's banners once per worker
        from serving.quiet import import_tensorflow

        import_tensorflow()
    return create_app(load_serving_config(json.loads(os.environ[CONFIG_ENV])))


if __name__ == "__main__":
    sys.exit(main())
