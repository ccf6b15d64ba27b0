"""A judge behind any OpenAI-compatible chat-completions endpoint (OpenAI, vLLM, `rft-jax serve`, ...).

Only the standard library is used (urllib and a thread pool), so a judge adds
no client dependency. Requests run `concurrency` at a time; timeouts, 408/409/
429 and 5xx replies and dropped connections are retried with exponential
backoff (honouring Retry-After); other 4xx replies fail at once with the
server's error message. The API key is read from an environment variable, so
it never sits in a config file or a log.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os
import random
import time
import urllib.error
import urllib.request

RETRYABLE = {408, 409, 429, 500, 502, 503, 504}


class JudgeBackendError(RuntimeError):
    """The endpoint did not give a usable reply (after retries where retrying makes sense)."""


@dataclasses.dataclass(frozen=True)
class OpenAIBackend:
    base_url: str
    model: str
    api_key_env: str = "OPENAI_API_KEY"
    temperature: float = 0.0
    max_tokens: int = 256
    concurrency: int = 8
    timeout_s: float = 60.0
    retries: int = 3

    def identity(self) -> dict:
        return {"backend": "openai", "base_url": self.base_url.rstrip("/"), "model": self.model,
                "temperature": self.temperature, "max_tokens": self.max_tokens}

    def _post(self, payload: dict) -> dict:
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        if key:
            headers["Authorization"] = f"Bearer {key}"
        request = urllib.request.Request(f"{self.base_url.rstrip('/')}/chat/completions",
                                         data=json.dumps(payload).encode(), headers=headers, method="POST")
        last = None
        for attempt in range(self.retries + 1):
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                    return json.loads(response.read())
            except urllib.error.HTTPError as err:
                detail = err.read().decode(errors="replace")[:300]
                if err.code not in RETRYABLE:
                    raise JudgeBackendError(f"HTTP {err.code} from {self.base_url}: {detail}") from None
                last = f"HTTP {err.code}: {detail}"
                wait = float(err.headers.get("Retry-After") or 0)
            except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
                last, wait = f"{type(err).__name__}: {err}", 0.0
            if attempt < self.retries:
                time.sleep(max(wait, 0.5 * 2**attempt * (1 + random.random())))
        raise JudgeBackendError(f"{self.base_url}: gave up after {self.retries + 1} attempts; last error {last}")

    def _complete_one(self, messages: list[dict], n: int) -> list[str]:
        replies: list[str] = []
        while len(replies) < n:  # endpoints that ignore `n` return one choice: ask again for the rest
            payload = {"model": self.model, "messages": messages, "temperature": self.temperature,
                       "max_tokens": self.max_tokens, "n": n - len(replies)}
            body = self._post(payload)
            try:
                texts = [c["message"]["content"] or "" for c in body["choices"]]
            except (KeyError, TypeError) as err:
                raise JudgeBackendError(f"malformed chat-completions reply ({err}): {json.dumps(body)[:300]}") from None
            if not texts:
                raise JudgeBackendError("the endpoint returned no choices")
            replies += texts
        return replies[:n]

    def complete(self, conversations: list[list[dict]], n: int) -> list[list[str] | Exception]:
        """n replies per conversation, or the exception that conversation ended with."""
        def one(messages):
            try:
                return self._complete_one(messages, n)
            except Exception as err:  # reported per conversation, counted as that sample's reward error
                return err

        with concurrent.futures.ThreadPoolExecutor(max(1, min(self.concurrency, len(conversations)))) as pool:
            return list(pool.map(one, conversations))
