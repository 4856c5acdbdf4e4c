"""OpenAI-compatible speech server (issue 5): `granite-asr serve`, or `create_app(model)` for any ASGI host.

Modules, in the order a request meets them: `app.py` (routes, auth, upload limit, timeouts), `forms.py`
(the multipart form → options), `scheduler.py` (dynamic batching onto one engine thread), `formats.py`
(OpenAI response shapes and SSE), `errors.py` (OpenAI error JSON), `metrics.py` (Prometheus text),
`command.py` (the CLI flags), `static/` (the web page). Nothing here is imported by the layers below.
Needs the `server` extra (fastapi, uvicorn, python-multipart); importing this package alone does not.
"""


def create_app(*args, **kwargs):
    """`granite_asr.server.app.create_app` (imported on use, so the package imports without FastAPI)."""
    from .app import create_app as _create_app

    return _create_app(*args, **kwargs)
