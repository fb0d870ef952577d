"""The dashboard, one wing of the API: its routes (`routes.py`), its Jinja2 templates and its scripts
and styles (`static/`), side by side, over the same storage as the JSON routes."""

from gradsweep.service.api.dashboard.routes import COMPARE_LIMIT, STATIC_DIR, router

__all__ = ["COMPARE_LIMIT", "STATIC_DIR", "router"]
