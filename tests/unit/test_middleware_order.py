"""The middleware order the architecture page draws is the order the app runs them in."""

from __future__ import annotations

from frontend.app import create_app
from frontend.settings import CorsSettings, Settings


def test_middleware_runs_in_the_documented_order():
    settings = Settings(
        environment="dev",
        secret_key="m" * 16 + "iddleware-order-test-secret",
        cors=CorsSettings(allow_origins=["https://app.example"]),
    )
    app = create_app(settings)
    outermost_first = [m.cls.__name__ for m in app.user_middleware]  # type: ignore[attr-defined]
    assert outermost_first == [
        "RequestIdMiddleware",
        "SecurityHeadersMiddleware",
        "ObserveMiddleware",
        "DisconnectCancelMiddleware",
        "CORSMiddleware",
        "BodyGuardMiddleware",
        "ResponseHeadersMiddleware",
        "HeadAsGetMiddleware",
    ]


def test_the_worker_header_is_outermost_in_the_test_environment():
    app = create_app(Settings(environment="test", secret_key="t" * 40))
    assert app.user_middleware[0].cls.__name__ == "WorkerIdMiddleware"  # type: ignore[attr-defined]
