"""Request and response bodies (XRequest / XResponse), with the examples shown in /docs."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field


def _no_bool(value: object) -> object:
    # pydantic's lax mode takes true/false as 1/0; JSON Schema's integer does not.
    if isinstance(value, bool):
        raise ValueError("must be an integer, not a boolean")
    return value


# An integer that refuses booleans (a form's "2" is still read as 2).
Integer = Annotated[int, BeforeValidator(_no_bool)]


class TranslateRequest(BaseModel):
    """POST /v1/translate."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "text": "Two young men are playing soccer. A dog watches them.",
                    "source_lang": "en",
                    "target_lang": "de",
                },
                {
                    "text": ["A man rides a bike.", "Children play in the park."],
                    "source_lang": "en",
                    "target_lang": "de",
                    "beam_size": 4,
                    "alternatives": 2,
                },
            ]
        },
    )

    text: str | list[str] = Field(
        description="One text or a list of texts; a text may hold several sentences and lines."
    )
    source_lang: str = Field(
        "auto",
        description="Source language code; 'auto' (the default) detects each text's language.",
        examples=["en"],
    )
    target_lang: str = Field(description="Target language code.", examples=["de"])
    format: Literal["text", "html"] = Field(
        "text", description="'html': translate the text and keep the markup."
    )
    beam_size: Integer | None = Field(
        None, description="Beam size (1 = greedy); the server's default when omitted."
    )
    max_length: Integer | None = Field(
        None,
        ge=1,
        le=1024,
        description="Most tokens per output sentence; default twice the source plus ten.",
    )
    alternatives: Integer = Field(0, ge=0, description="How many alternative translations to add.")


class DetectedLanguage(BaseModel):
    language: str = Field(description="Language code.", examples=["en"])
    confidence: float = Field(description="Confidence, 0-100.", examples=[97.0])


class TranslationItem(BaseModel):
    text: str = Field(description="The best translation.")
    alternatives: list[str] | None = Field(
        None, description="The next best translations, when asked for."
    )
    detected_language: DetectedLanguage | None = Field(
        None, description="With source_lang 'auto': the language detected for this text."
    )


class TranslateResponse(BaseModel):
    """POST /v1/translate: one item per input text, in order."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "translations": [
                        {"text": "Zwei junge Männer spielen Fußball. Ein Hund sieht ihnen zu."}
                    ],
                    "model": "en-de@3f9c2a71d0be",
                    "backend": "onnx",
                    "route": ["en-de"],
                }
            ]
        }
    )

    translations: list[TranslationItem]
    model: str = Field(
        description="<pair>@<model version (content hash)>; through a pivot, both models "
        "joined by '+'."
    )
    backend: str = Field(description="The backend that translated: onnx, or torch on fallback.")
    route: list[str] | None = Field(
        None,
        description="The model pairs that translated, in order: the pair itself, or two "
        "pairs through English (de-fr: de-en, then en-fr).",
        examples=[["en-de"], ["de-en", "en-fr"]],
    )


class LibreTranslateRequest(BaseModel):
    """POST /translate, LibreTranslate's fields (JSON or form body)."""

    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={
            "examples": [
                {
                    "q": "A little girl climbs into a wooden playhouse.",
                    "source": "en",
                    "target": "de",
                },
                {"q": ["Hello.", "Good night."], "source": "en", "target": "de", "alternatives": 2},
            ]
        },
    )

    q: str | list[str] = Field(description="Text or list of texts.")
    source: str = Field(
        "auto", description="Source language code, or 'auto' to detect each text's language."
    )
    target: str = Field(description="Target language code.")
    format: Literal["text", "html"] = Field(
        "text", description="'html': translate the text and keep the markup."
    )
    alternatives: Integer = Field(0, ge=0, description="How many alternatives to add.")
    api_key: str | None = Field(None, description="API key, when the server requires one.")


class LibreTranslateResponse(BaseModel):
    """LibreTranslate's answer: a string (or list, when q was a list)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"translatedText": "Ein kleines Mädchen klettert in ein Spielhaus aus Holz."},
            ]
        }
    )

    translatedText: str | list[str]  # noqa: N815 (LibreTranslate's field name)
    alternatives: list[str] | list[list[str]] | None = None
    detectedLanguage: DetectedLanguage | list[DetectedLanguage] | None = Field(  # noqa: N815
        None, description="With source 'auto': the detected language (a list when q was)."
    )


class DetectRequest(BaseModel):
    """POST /detect (JSON, form or query string)."""

    model_config = ConfigDict(
        extra="ignore", json_schema_extra={"examples": [{"q": "Ein Hund rennt im Schnee."}]}
    )

    q: str = Field(description="The text whose language to detect.")
    api_key: str | None = Field(None, description="API key, when the server requires one.")


class FrontendSettingsResponse(BaseModel):
    """GET /frontend/settings: LibreTranslate's fields, for web pages and clients."""

    charLimit: int = Field(description="Most characters per text.")  # noqa: N815
    frontendTimeout: int = Field(description="Debounce of translate-as-you-type, ms.")  # noqa: N815
    keyRequired: bool = Field(description="Whether translation needs an API key.")  # noqa: N815
    suggestions: bool = Field(description="Whether /suggest takes suggestions (never here).")
    filesTranslation: bool = Field(description="Whether /translate_file works.")  # noqa: N815
    supportedFilesFormat: list[str] = Field(examples=[[".txt", ".html"]])  # noqa: N815
    language: dict[str, dict[str, str]] = Field(
        description="Default source and target: {source: {code, name}, target: {code, name}}."
    )


class TranslateFileResponse(BaseModel):
    translatedFileUrl: str = Field(  # noqa: N815
        examples=["http://localhost:8000/download_file/Xy3...-notes.de.txt"]
    )


class LanguageResponse(BaseModel):
    code: str = Field(examples=["en"])
    name: str = Field(examples=["English"])
    targets: list[str] = Field(examples=[["de"]])


class ModelInfo(BaseModel):
    pair: str = Field(examples=["en-de"])
    source_lang: str
    target_lang: str
    backend: str = Field(description="Backend serving now (torch while on the fallback).")
    fallback: str | None = Field(description="Backend that takes over when the first fails.")
    degraded: bool = Field(description="True while serving on the fallback.")
    device: str
    precision: str
    version: str = Field(description="Content hash of config, weights and tokenizer.")


class PivotInfo(BaseModel):
    pair: str = Field(examples=["de-fr"])
    source_lang: str
    target_lang: str
    route: list[str] = Field(
        description="The served pairs that translate it, in order.",
        examples=[["de-en", "en-fr"]],
    )


class ModelsResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "models": [
                        {
                            "pair": "en-de",
                            "source_lang": "en",
                            "target_lang": "de",
                            "backend": "onnx",
                            "fallback": "torch",
                            "degraded": False,
                            "device": "cpu",
                            "precision": "fp32",
                            "version": "3f9c2a71d0be",
                        }
                    ],
                    "pivots": [
                        {
                            "pair": "de-fr",
                            "source_lang": "de",
                            "target_lang": "fr",
                            "route": ["de-en", "en-fr"],
                        }
                    ],
                }
            ]
        }
    )

    models: list[ModelInfo]
    pivots: list[PivotInfo] = Field(
        default_factory=list,
        description="Pairs without a model of their own, translated through English.",
    )


class HealthResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "status": "ok",
                    "models": {"en-de": {"state": "ready", "backend": "onnx", "degraded": False}},
                },
            ]
        }
    )

    status: str = Field(description="live | loading | ok | degraded | failed | stopping")
    models: dict[str, dict[str, object]] = Field(
        default_factory=dict,
        description="Each pair: state (loading | ready | failed), backend, degraded, and error "
        "when it failed to load or runs on the fallback.",
    )


class ErrorDetail(BaseModel):
    type: str = Field(examples=["unsupported_language_pair"])
    message: str = Field(examples=["no model for en-fr; served pairs: de-en, en-de"])


class ErrorResponse(BaseModel):
    """Every error: {"error": {"type", "message"}}."""

    error: ErrorDetail
