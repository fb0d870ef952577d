"""The client side: the Python client of the HTTP API (`http.py`), the command line (`cli.py`)
over it, and the demo (`demo.py`) that starts a service of its own and drives it with the client."""

from gradsweep.service.client.http import MAX_PAGE, ApiError, Client

__all__ = ["MAX_PAGE", "ApiError", "Client"]
