"""What one server process is allowed to do: address, auth, limits. Every field is a flag of
``genloop serve``; the defaults suit a 2-core machine serving small models."""

from __future__ import annotations

import ipaddress
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ServeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    auth: bool = Field(True, description="require an API key (off only on a loopback address)")
    max_body_bytes: int = Field(1 << 20, ge=1024)
    max_prompt_chars: int = Field(16_384, ge=1)
    max_chat_chars: int = Field(131_072, ge=1, description=(
        "characters of a chat request's messages, all of them as received (before old turns "
        "are dropped to fit the model's context)"))
    max_tokens: int = Field(2048, ge=1)
    max_file_bytes: int = Field(16 << 20, ge=1024, description=(
        "bytes of one uploaded file (POST /v1/files), counted as it arrives"))
    max_file_lines: int = Field(100_000, ge=1, description="records of one uploaded file")
    max_n: int = Field(8, ge=1, le=64)
    max_images: int = Field(16, ge=1, le=64)
    max_image_steps: int = Field(1000, ge=1, le=1000)
    max_batch: int = Field(16, ge=1, le=256, description="sequences decoded together per text model")
    max_queue: int = Field(32, ge=0, description="sequences waiting per text model before 503")
    image_slots: int = Field(1, ge=1, description="caption requests running at once")
    image_queue: int = Field(16, ge=0, description=(
        "image requests waiting per image model (and caption requests waiting) before 503"))
    image_batch: int = Field(16, ge=1, le=256, description=(
        "images sampled together per image model: concurrent requests share sampler steps"))
    rate_limit: int = Field(600, ge=0, description="requests per key per minute; 0 = unlimited")
    models_loaded: int = Field(4, ge=1, description="model versions kept loaded (LRU)")
    threads: int = Field(1, ge=1, le=256, description=(
        "torch threads for the models' forward passes; small models decode fastest on one, "
        "which leaves the other cores to HTTP"))
    decode: Literal["process", "thread"] = Field("process", description=(
        "where text models decode: a child process per model (off the HTTP process's "
        "interpreter lock) or a thread of the server (for tests and embedding the app)"))
    keepalive_s: float = Field(5.0, gt=0, description="SSE keep-alive comment interval")
    public_url: str | None = Field(None, max_length=2048, description=(
        "the base URL clients reach this server at (https://genloop.example.com, or behind a "
        "path: .../genloop); image URLs start with it. None: http://HOST:PORT of the bind "
        "address, or a relative URL when that is a wildcard (0.0.0.0, ::). Never the Host header"))

    @field_validator("public_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parsed = urlsplit(value)
        if parsed.scheme not in ("http", "https") or not parsed.netloc or parsed.query or parsed.fragment:
            raise ValueError(f"public_url must be an http(s) URL without query or fragment, not {value!r}")
        return value.rstrip("/")

    def base_url(self) -> str:
        """What image URLs start with (no trailing slash; "" for relative URLs)."""
        if self.public_url is not None:
            return self.public_url
        if self.host in ("0.0.0.0", "::", ""):
            return ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @model_validator(mode="after")
    def _no_open_server_without_keys(self) -> ServeConfig:
        if not self.auth and not is_loopback(self.host):
            raise ValueError(f"auth can be switched off only on a loopback address, not {self.host!r}")
        return self
