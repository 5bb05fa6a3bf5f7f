"""Play world models in a browser: `wmfast serve` (ASGI app, batching scheduler, static page)
and `wmfast bench serve` (concurrent websocket players on localhost)."""
from wmfast.serve.models import ServeConfig, ServedModel, parse_runs  # noqa: F401
from wmfast.serve.app import ServerThread, create_app, load_models, serve  # noqa: F401
