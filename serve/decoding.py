"""The `input` strings of an embeddings request -> (H, W, 3) uint8 images, with limits, off the event loop.

Accepted: `data:image/<type>;base64,<payload>` URLs (as NV-CLIP NIM takes them) and bare base64 of an image
file. `http(s)://` URLs are fetched only from hosts listed with `--allow-url-host` (no server-side requests on
a client's behalf otherwise). Every failure names the item's index.
"""

from __future__ import annotations

import asyncio
import binascii
import dataclasses
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from ijepa_deploy.contract.errors import ImageError, PixelLimitError
from ijepa_deploy.runtime import Preprocessor

from .errors import bad_item, bad_request

_DATA_URL = re.compile(r"data:(?P<type>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w.+-]+=[\w.+-]+)*)(?P<b64>;base64)?,",
                       re.IGNORECASE)
_WHITESPACE = re.compile(rb"\s+")


def parse_inputs(body: dict, max_items: int) -> list[str]:
    """The request's `input` as a non-empty list of strings (one string is a list of one)."""
    items = body.get("input")
    if isinstance(items, str):
        items = [items]
    if not isinstance(items, list):
        raise bad_request("'input' must be a string or a list of strings (data:image/...;base64, URLs or bare "
                          "base64 of image files)", "invalid_input", "input")
    if not items:
        raise bad_request("'input' is empty: send at least one image", "empty_input", "input")
    if len(items) > max_items:
        raise bad_request(f"'input' has {len(items)} images, more than this server admits at once ({max_items}, "
                          "--max-queue); split the request", "too_many_inputs", "input")
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise bad_item(i, f"expected a string, got {type(item).__name__} (token arrays are for text models)",
                           "invalid_input")
        if not item.strip():
            raise bad_item(i, "empty string", "empty_input")
    return items


class Decoder:
    """Decodes and resizes request images on a thread pool, exactly as the Embedder's preprocessor does, with
    the server's pixel limit (checked on the header, before decoding)."""

    def __init__(self, preprocessor: Preprocessor, *, workers: int, max_pixels: int, max_bytes: int,
                 allow_hosts: tuple[str, ...] = (), url_timeout_s: float = 10.0):
        self.preprocessor = Preprocessor(dataclasses.replace(preprocessor.spec, max_pixels=max_pixels),
                                         (preprocessor.height, preprocessor.width))
        self.max_bytes = max_bytes
        self.allow_hosts = allow_hosts
        self.url_timeout_s = url_timeout_s
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ijepa-serve-decode")

    async def decode_all(self, items: list[str]) -> list[np.ndarray]:
        """Every item decoded, in order; the first bad item (lowest index) fails the request with a 400."""
        loop = asyncio.get_running_loop()
        futures = [loop.run_in_executor(self._pool, self.decode_one, item, i) for i, item in enumerate(items)]
        results = await asyncio.gather(*futures, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return results

    def decode_one(self, item: str, index: int) -> np.ndarray:
        """One input string -> (H, W, 3) uint8 at the model's size."""
        data = self.image_bytes(item, index)
        try:
            return self.preprocessor.load(data, index)[0]
        except PixelLimitError as exc:
            raise bad_item(index, str(exc), "too_many_pixels") from None
        except ImageError as exc:
            raise bad_item(index, str(exc), "invalid_image") from None

    def image_bytes(self, item: str, index: int) -> bytes:
        text = item.strip()
        lowered = text[:8].lower()
        if lowered.startswith(("http://", "https:/")):
            return self._fetch(text, index)
        if lowered.startswith("data:"):
            match = _DATA_URL.match(text)
            if not match:
                raise bad_item(index, "malformed data URL; expected data:image/<type>;base64,<data>", "invalid_input")
            kind = (match.group("type") or "").lower()
            if not kind.startswith("image/"):
                raise bad_item(index, f"data URL of type {kind or 'text/plain'!r}; only image/* is embedded",
                               "invalid_input")
            if not match.group("b64"):
                raise bad_item(index, "data URL without ;base64", "invalid_base64")
            text = text[match.end():]
        return self._b64decode(text, index)

    def _b64decode(self, text: str, index: int) -> bytes:
        raw = _WHITESPACE.sub(b"", text.encode("ascii", errors="replace"))
        if len(raw) * 3 // 4 > self.max_bytes:
            raise bad_item(index, f"over the {self.max_bytes}-byte limit for one image", "too_large")
        try:
            return binascii.a2b_base64(raw, strict_mode=True)
        except (binascii.Error, ValueError) as exc:
            raise bad_item(index, f"not valid base64 ({exc}); send data:image/<type>;base64,<data> or the "
                           "base64 of an image file", "invalid_base64") from None

    def _fetch(self, url: str, index: int) -> bytes:
        parsed = urllib.parse.urlsplit(url)
        host = (parsed.hostname or "").lower()
        netloc = f"{host}:{parsed.port}" if parsed.port else host
        if not self.allow_hosts or (host not in self.allow_hosts and netloc not in self.allow_hosts):
            raise bad_item(index, f"remote URLs are not fetched (host {host!r}); send the image inline as "
                           "data:image/<type>;base64,... or start the server with --allow-url-host", "url_not_allowed")
        request = urllib.request.Request(url, headers={"User-Agent": "ijepa-serve"})
        opener = urllib.request.build_opener(_NoRedirect)  # a redirect could leave the allowed hosts
        try:
            with opener.open(request, timeout=self.url_timeout_s) as response:
                data = response.read(self.max_bytes + 1)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise bad_item(index, f"cannot fetch {url}: {getattr(exc, 'reason', exc)}", "url_fetch_failed") from None
        if len(data) > self.max_bytes:
            raise bad_item(index, f"{url} is over the {self.max_bytes}-byte limit for one image", "too_large")
        return data

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        raise urllib.error.URLError(f"redirect to {newurl} refused")


def default_decode_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))

