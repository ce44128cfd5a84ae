"""The web layer: ``create_app(settings, engine)`` and its blueprints."""

from spikewatch.web.app import create_app

__all__ = ["create_app"]
