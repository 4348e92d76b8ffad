"""The OpenAPI document tells the truth: every route is in it, and schemathesis,
generating requests from it (valid and invalid ones), finds no undocumented 5xx and
no answer that does not conform to it. In process, against the real recommender
with fake models and store (``test_serving_recommender``) behind the HTTP layer."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)
from starlette.routing import Route

from serving.app import create_app
from serving.config import ServingConfig
from serving.openapi import OPENAPI_PATH
from tests.unit.test_serving_app import AUTH, TOKEN, FakeService
from tests.unit.test_serving_recommender import FakeStore, recommender, user

# What a 503 may say: the codes the document lists for it (checked against the body
# by response_schema_conformance); any other 5xx is a failure.
DOCUMENTED_503 = {"overloaded", "unavailable", "events_disabled", "publish_failed"}


def service() -> FakeService:
    fake = FakeService()
    fake.recommender = recommender(FakeStore({"u": user(), "old": user(user_last_event_ms=0)}))
    return fake


def app() -> Any:
    config = ServingConfig(model_base="unused", token=TOKEN, limits={"max_body_bytes": 4096})
    return create_app(config, service())  # type: ignore[arg-type]


APP = app()
# Invalid requests must be refused with one of these (413: a body over the limit).
REJECTIONS = ["400", "401", "405", "413"]
CONFIG = SchemathesisConfig.from_dict(
    {"checks": {"negative_data_rejection": {"expected-statuses": REJECTIONS}}}
)
schema = schemathesis.openapi.from_asgi(OPENAPI_PATH, APP, config=CONFIG, headers=AUTH)


def no_undocumented_server_error(ctx: Any, response: Any, case: Any) -> bool | None:
    if response.status_code < 500:
        return None
    body = response.json() if "json" in response.headers.get("content-type", [""])[0] else {}
    assert response.status_code == 503 and body.get("error") in DOCUMENTED_503, (
        f"{response.status_code}: {response.text[:300]}"
    )
    return True


CHECKS = [
    no_undocumented_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    unsupported_method,
    ignored_auth,
]
# Not ``negative_data_rejection``: in a full test run it flagged, as "accepted
# negative data", a case whose dropped user_id and Authorization were restored on
# the wire (the curl it printed is a valid request: ``user_id=0`` and the token), a
# generator artefact that made CI flaky. Invalid requests are covered by the
# hand-written 400/401/405/413 tests of test_serving_app.py.


# Derandomized: the same 100 cases every run.
@schema.parametrize()
@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
    database=None,
)
def test_the_service_conforms_to_its_openapi_document(case: Any) -> None:
    case.call_and_validate(headers=AUTH, checks=CHECKS)


def test_every_route_is_documented() -> None:
    document = APP.openapi()
    served = {
        (route.path, method.lower())
        for route in APP.routes
        if isinstance(route, Route)
        for method in route.methods or ()
        if method != "HEAD"  # Starlette answers HEAD wherever GET is served
    }
    documented = {(path, method) for path, ops in document["paths"].items() for method in ops}
    assert served == documented


@pytest.mark.parametrize("token", [None, TOKEN])
def test_the_document_is_served_and_names_the_token_only_when_one_is_set(token) -> None:
    from fastapi.testclient import TestClient

    config = ServingConfig(model_base="unused", token=token)
    with TestClient(create_app(config, service())) as client:  # type: ignore[arg-type]
        document = client.get(OPENAPI_PATH, headers=AUTH if token else {}).json()
    assert document["openapi"] == "3.1.0"
    assert ("security" in document) == (token is not None)
    statuses = document["paths"]["/v1/recommendations"]["get"]["responses"]
    assert ("401" in statuses) == (token is not None)
