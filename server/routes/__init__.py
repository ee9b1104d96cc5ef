"""The HTTP API's routers, one module per resource; ``server.http`` includes them."""

from server.routes import gallery, kserve, search, service

ROUTERS = (search.router, gallery.router, service.router, kserve.router)

__all__ = ["ROUTERS"]
