"""The management API's route table: every `api_*` module's routes, in the order they are
tried. The app routes by it and `openapi.py` documents it; no handler module imports it.
"""

from __future__ import annotations

from gateway.management import api_access, api_limits, api_node, api_objects, api_tools
from gateway.management.router import Routes


def routes() -> Routes:
    table = Routes()
    for module in (api_node, api_objects, api_access, api_tools, api_limits):
        table.extend(module.routes)
    return table
