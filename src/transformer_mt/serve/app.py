"""The HTTP API: LibreTranslate's /translate and /languages, /v1/translate with
beam width, n-best lists and cross-attention, /health, and the web page at /.

Every error is a JSON body ``{"error": message}``: 400 for a bad request (bad JSON,
an empty or oversized text, an unknown language pair), 413 for a body over the
limit, 422 for a /v1 body of the wrong shape, 503 when the queue is full or the
server is stopping, 504 when a request waits longer than its timeout.
"""

from __future__ import annotations

import asyncio
import json
import logging
from contextlib import asynccontextmanager, suppress
from functools import cache
from importlib import resources
from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException

from ..errors import TransformerMTError
from .batcher import Batcher, ServiceUnavailable
from .config import ServeConfig
from .engine import TranslationEngine, Work
from .schemas import (
    ErrorBody,
    Health,
    Language,
    LibreRequest,
    LibreResponse,
    TranslateRequest,
    TranslateResponse,
)

log = logging.getLogger(__name__)

ERRORS = {code: {"model": ErrorBody} for code in (400, 413, 422, 503, 504)}
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


class Failure(Exception):
    """A request the server could not answer, with its HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(
            413,
            f"request body over max_body_bytes={limit}; send fewer or shorter texts",
        )


class BodyLimit:
    """ASGI middleware: 413 for a body over ``max_bytes``, whether announced by
    Content-Length or found while reading a chunked body."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length", b"0")
        if length.isdigit() and int(length) > self.max_bytes:
            error = BodyTooLarge(self.max_bytes)
            response = JSONResponse({"error": error.detail}, error.status_code)
            return await response(scope, receive, send)
        seen = 0

        async def limited_receive():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise BodyTooLarge(self.max_bytes)
            return message

        await self.app(scope, limited_receive, send)


class Service:
    """The engine, its batcher and the request limits, shared by the routes."""

    def __init__(self, engine: TranslationEngine, config: ServeConfig) -> None:
        self.engine = engine
        self.config = config
        self.batcher = Batcher(engine.run, config)

    def check_pair(self, source: str, target: str) -> None:
        engine = self.engine
        if source not in (engine.source, "auto") or target != engine.target:
            raise TransformerMTError(
                f"language pair {source}->{target} is not supported; this model "
                f"translates {engine.source}->{engine.target}"
            )

    def check_texts(self, texts: list[str]) -> None:
        limit = self.config
        if not texts or all(not text.strip() for text in texts):
            raise TransformerMTError("q is empty: give a text or a list of texts")
        if len(texts) > limit.max_texts:
            raise TransformerMTError(
                f"q has {len(texts)} texts; at most max_texts={limit.max_texts} "
                "per request"
            )
        for i, text in enumerate(texts):
            if len(text) > limit.max_chars:
                raise TransformerMTError(
                    f"q[{i}] has {len(text)} characters; at most "
                    f"max_chars={limit.max_chars} per text"
                )

    def check_beam(self, beam_size: int, nbest: int) -> None:
        if beam_size > self.config.max_beam_size:
            raise TransformerMTError(
                f"beam_size={beam_size} exceeds this server's max_beam_size="
                f"{self.config.max_beam_size}"
            )
        if nbest > beam_size:
            raise TransformerMTError(
                f"{nbest} hypotheses per text need a beam of at least {nbest} "
                f"(beam_size={beam_size})"
            )

    async def translate(
        self, request: Request, texts: list[str], beam: int, nbest: int, layer=None
    ) -> list[dict]:
        """Queue the texts and wait for their results, giving up when the client
        disconnects or the timeout passes."""
        self.check_texts(texts)
        self.check_beam(beam, nbest)
        submit = self.batcher.submit(
            (beam, nbest),
            Work(tuple(texts), layer),
            self.engine.count_tokens(texts),
            self.config.request_timeout_s,
        )
        try:
            return await until_disconnect(request, submit)
        except (TimeoutError, asyncio.TimeoutError):
            raise Failure(
                504,
                f"no answer within request_timeout_s={self.config.request_timeout_s}"
                "; the server is overloaded, retry later",
            ) from None
        except ServiceUnavailable as exc:
            raise Failure(503, str(exc)) from None


async def until_disconnect(request: Request, work):
    """Await ``work``; cancel it if the client closes the connection first."""
    task = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(wait_for_disconnect(request))
    await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        gone.cancel()
        return task.result()
    task.cancel()
    with suppress(asyncio.CancelledError):
        await task
    raise Failure(499, "the client closed the connection")


async def wait_for_disconnect(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


# ---- routes ---------------------------------------------------------------------

router = APIRouter()


def service_of(request: Request) -> Service:
    return request.app.state.service


@cache
def page() -> str:
    return (resources.files(__package__) / "static" / "index.html").read_text("utf-8")


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
def index() -> HTMLResponse:
    return HTMLResponse(page())


@router.get("/health", response_model=Health)
def health(request: Request) -> Health:
    """Liveness and batching counters."""
    service = service_of(request)
    stats = service.batcher.stats
    return Health(
        status="ok",
        source=service.engine.source,
        target=service.engine.target,
        queued=service.batcher.queued,
        in_flight=service.batcher.waiting,
        **vars(stats),
    )


@router.get("/languages", response_model=list[Language])
def languages(request: Request) -> list[dict]:
    """LibreTranslate's language list."""
    return service_of(request).engine.languages()


async def libre_body(request: Request) -> LibreRequest:
    """Parse a JSON or form-encoded LibreTranslate body."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind in FORM_TYPES:
        form = await request.form()
        values = {key: form.get(key) for key in form.keys()}
        if "q" in values:
            q = form.getlist("q")
            values["q"] = q[0] if len(q) == 1 else q
    else:
        try:
            values = json.loads(await request.body())
        except (ValueError, UnicodeDecodeError) as exc:
            raise TransformerMTError(f"malformed JSON body: {exc}") from None
        if not isinstance(values, dict):
            raise TransformerMTError(
                "the JSON body must be an object with q, source, target"
            )
    try:
        return LibreRequest.model_validate(values)
    except ValidationError as exc:
        raise TransformerMTError(describe(exc.errors())) from None


LIBRE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            kind: {"schema": LibreRequest.model_json_schema()}
            for kind in ("application/json", FORM_TYPES[0])
        },
    }
}


@router.post(
    "/translate",
    response_model=LibreResponse,
    response_model_exclude_none=True,
    responses=ERRORS,
    openapi_extra=LIBRE_BODY,
)
async def libre_translate(request: Request) -> LibreResponse:
    """LibreTranslate-compatible translation of a text or a list of texts."""
    body = await libre_body(request)
    if body.format != "text":
        raise TransformerMTError(
            f"format={body.format!r} is not supported: this server translates plain "
            "text (format=text)"
        )
    service = service_of(request)
    service.check_pair(body.source, body.target)
    texts = [body.q] if isinstance(body.q, str) else body.q
    beam = max(service.config.beam_size, body.alternatives + 1)
    results = await service.translate(request, texts, beam, body.alternatives + 1)
    translated = [r["text"] for r in results]
    others = [[text for text, _ in r["nbest"][1:]] for r in results]
    single = isinstance(body.q, str)
    return LibreResponse(
        translatedText=translated[0] if single else translated,
        alternatives=(others[0] if single else others) if body.alternatives else None,
    )


@router.post("/v1/translate", response_model=TranslateResponse, responses=ERRORS)
async def translate(body: TranslateRequest, request: Request) -> TranslateResponse:
    """Translate texts with a chosen beam width, n-best lists and, on request,
    each text's cross-attention (averaged over heads) as a target x source matrix."""
    service = service_of(request)
    engine = service.engine
    source, target = body.source or engine.source, body.target or engine.target
    service.check_pair(source, target)
    layer = attention_layer(body, engine.decoder_layers)
    beam = body.beam_size or service.config.beam_size
    results = await service.translate(request, body.texts, beam, body.nbest, layer)
    return TranslateResponse(
        source=engine.source,
        target=target,
        beam_size=beam,
        translations=[
            {**r, "nbest": [{"text": t, "score": s} for t, s in r["nbest"]]}
            for r in results
        ],
    )


def attention_layer(body: TranslateRequest, layers: int) -> int | None:
    if not body.attention:
        if body.attention_layer is not None:
            raise TransformerMTError("attention_layer needs attention=true")
        return None
    layer = body.attention_layer or layers
    if not 1 <= layer <= layers:
        raise TransformerMTError(
            f"attention_layer={layer}: this model has decoder layers 1 to {layers}"
        )
    return layer


# ---- the application ------------------------------------------------------------


def describe(errors: list[dict]) -> str:
    """Pydantic errors as one line naming each field."""
    parts = []
    for error in errors:
        where = ".".join(str(p) for p in error["loc"] if p != "body") or "body"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)


def add_error_handlers(app: FastAPI) -> None:
    def reply(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    @app.exception_handler(TransformerMTError)
    async def bad_request(_, exc: TransformerMTError):
        return reply(400, str(exc))

    @app.exception_handler(Failure)
    async def failure(_, exc: Failure):
        return reply(exc.status, str(exc))

    @app.exception_handler(HTTPException)
    async def http_error(_, exc: HTTPException):
        return reply(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def invalid(_, exc: RequestValidationError):
        errors = exc.errors()
        if any(e["type"] == "json_invalid" for e in errors):
            detail = errors[0].get("ctx", {}).get("error", "cannot parse")
            return reply(400, f"malformed JSON body: {detail}")
        return reply(422, describe(errors))


def create_app(engine: TranslationEngine, config: ServeConfig) -> FastAPI:
    """The FastAPI application; its lifespan starts and drains the batcher."""
    service = Service(engine, config)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        await service.batcher.start()
        yield
        await service.batcher.stop()

    app = FastAPI(
        title="transformer-mt",
        description=f"Translation {engine.source}->{engine.target}, "
        "LibreTranslate-compatible.",
        lifespan=lifespan,
    )
    app.state.service = service
    app.add_middleware(BodyLimit, max_bytes=config.max_body_bytes)
    add_error_handlers(app)
    app.include_router(router)
    return app


def run_server(path: str | Path, config: ServeConfig, device: str = "cpu") -> None:
    """Load a checkpoint and serve it until SIGINT/SIGTERM; requests in flight and
    queued ones are answered before the process exits."""
    import uvicorn

    app = create_app(TranslationEngine.load(path, device), config)
    # log_config=None: uvicorn's lines (access log included) go through the logging
    # set up by the CLI, to stderr, so -q silences them too.
    uvicorn.run(app, host=config.host, port=config.port, log_config=None)
