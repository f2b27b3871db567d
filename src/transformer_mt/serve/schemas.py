"""Request and response bodies; FastAPI builds /openapi.json from them."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class LibreRequest(BaseModel):
    """LibreTranslate's POST /translate body (JSON or form-encoded)."""

    model_config = ConfigDict(extra="ignore")

    q: str | list[str] = Field(description="a text or a list of texts")
    source: str = Field(description="source language code, or auto")
    target: str = Field(description="target language code")
    format: str = Field(default="text", description="text (html is not supported)")
    alternatives: int = Field(
        default=0, ge=0, description="extra translations per text, from the beam"
    )
    api_key: str | None = Field(default=None, description="accepted and ignored")


class LibreResponse(BaseModel):
    translatedText: str | list[str]  # noqa: N815  (LibreTranslate's field name)
    alternatives: list[str] | list[list[str]] | None = None


class Language(BaseModel):
    code: str
    name: str
    targets: list[str]


class TranslateRequest(BaseModel):
    """POST /v1/translate: beam width, n-best lists and cross-attention."""

    model_config = ConfigDict(extra="forbid")

    texts: list[str] = Field(description="texts to translate")
    source: str | None = Field(default=None, description="default: the model's")
    target: str | None = Field(default=None, description="default: the model's")
    beam_size: int | None = Field(
        default=None, ge=1, description="beam width (default: the server's)"
    )
    nbest: int = Field(default=1, ge=1, description="hypotheses per text")
    attention: bool = Field(
        default=False, description="return cross-attention weights per text"
    )
    attention_layer: int | None = Field(
        default=None, description="decoder layer, 1-based (default: the last)"
    )


class Hypothesis(BaseModel):
    text: str
    score: float


class CrossAttention(BaseModel):
    layer: int = Field(description="decoder layer, 1-based")
    source: list[str] = Field(description="S source pieces, ending with </s>")
    target: list[str] = Field(description="T target pieces, ending with </s>")
    weights: list[list[float]] = Field(
        description="T rows of S weights, averaged over heads; each row sums to 1"
    )


class Translation(BaseModel):
    text: str
    score: float
    nbest: list[Hypothesis]
    attention: CrossAttention | None = None


class TranslateResponse(BaseModel):
    source: str
    target: str
    beam_size: int
    translations: list[Translation]


class Health(BaseModel):
    status: str
    source: str
    target: str
    queued: int = Field(description="requests waiting for a batch")
    in_flight: int = Field(description="requests accepted and not yet answered")
    batches: int = Field(description="model calls so far")
    requests: int = Field(description="requests answered by those calls")
    largest_batch: int = Field(description="most requests in one model call")
    dropped: int = Field(description="requests given up before their batch ran")
    failed: int = Field(description="requests whose model call raised")


class ErrorBody(BaseModel):
    error: str
