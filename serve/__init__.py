"""`ijepa-serve`: an OpenAI/NIM-compatible HTTP embeddings server over an artifact folder.

    ijepa-serve --artifacts engines/vith14_1k --precision int8-cpu --port 8000

Routes: `POST /v1/embeddings` (images as `data:image/...;base64,` strings or bare base64), `GET /v1/models`,
`GET /v1/health/live`, `GET /v1/health/ready`, `GET /metrics` (Prometheus). Requests' images are batched
together dynamically (bounded queue, `--max-wait-ms`), decoded off the event loop, and run through the same
`Embedder` as `ijepa-embed`. Install with `pip install 'ijepa-deploy[serve]'`.
"""

from .config import ServeConfig

__all__ = ["ServeConfig", "create_app"]


def create_app(config: ServeConfig, **kwargs):
    """The ASGI app for `config` (see `ijepa_deploy.serve.app.create_app`)."""
    from .app import create_app as _create_app

    return _create_app(config, **kwargs)
