"""schemathesis against the app, from the committed openapi/openapi.json: no 5xx, no
undocumented status codes, responses conform to their schemas and content types."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.problems import ROOT


@pytest.fixture
def api_schema(redis_server):
    from service.app import create_app
    from service.settings import Settings

    # A queue no worker listens on: accepted problems stay queued, nothing trains.
    app = create_app(Settings(redis_url=redis_server.url, queue="odeserve-schemathesis"))
    schema = schemathesis.openapi.from_path(ROOT / "openapi" / "openapi.json")
    schema.app = app
    return schema


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_schema(case) -> None:
    # positive_data_acceptance expects every schema-valid body to be accepted; /solve also checks
    # meaning (names, orders, conditions), so schema-valid nonsense is rightly a 422.
    case.call_and_validate(excluded_checks=[positive_data_acceptance])
