"""`remote`: call a reward endpoint over HTTP (stdlib urllib), with batching, bounded
concurrency, timeouts and retries with exponential backoff.

Failure containment matches local rewards: a batch that still fails after its
retries gives each of its samples `RewardResult(0.0, error=...)`; nothing raises.
Tokens come from an environment variable (`token_env`) so configs hold no secrets.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from rft_jax.data.example import Example
from rft_jax.rewards.remote.protocol import parse_response_item, request_item
from rft_jax.rewards.result import RewardResult, failed

RETRY_STATUS = (429, 500, 502, 503, 504)


def post_json(url: str, payload: object, *, token: str | None, timeout_s: float) -> object:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=json.dumps(payload).encode(), headers=headers, method="POST")
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        return json.loads(response.read())


def call_with_retries(url: str, items: list[dict], *, token: str | None, timeout_s: float, retries: int,
                      backoff_s: float) -> list[RewardResult]:
    last_error = ""
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(backoff_s * 2 ** (attempt - 1))
        try:
            response = post_json(url, items, token=token, timeout_s=timeout_s)
            return match_response(items, response)
        except urllib.error.HTTPError as err:
            last_error = f"HTTP {err.code} {err.reason}{_error_message(err)}"
            if err.code not in RETRY_STATUS:
                break  # 4xx: retrying will not help
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError, json.JSONDecodeError) as err:
            last_error = f"{type(err).__name__}: {getattr(err, 'reason', err)}"
    return [failed(f"remote: {last_error} after {attempt + 1} attempt(s)") for _ in items]


def _error_message(err: urllib.error.HTTPError) -> str:
    """The server's own reason (e.g. too many samples), from an OpenAI-style error body, if it sent one."""
    try:
        message = json.loads(err.read(4096) or b"null")["error"]["message"]
    except Exception:  # noqa: BLE001 - a body that says nothing useful adds nothing
        return ""
    return f": {str(message)[:300]}"


def match_response(items: list[dict], response: object) -> list[RewardResult]:
    if not isinstance(response, list):
        return [failed("remote: response is not a list") for _ in items]
    by_id = {r.get("id"): r for r in response if isinstance(r, dict)}
    return [parse_response_item(by_id[item["id"]]) if item["id"] in by_id
            else failed(f"remote: no result for id {item['id']}") for item in items]


def remote_reward_batch(examples: list[Example], completions: list[str], *, url: str, token_env: str | None = None,
                        batch_size: int = 32, concurrency: int = 4, timeout_s: float = 30.0, retries: int = 3,
                        backoff_s: float = 0.5) -> list[RewardResult]:
    token = os.environ.get(token_env) if token_env else None
    items = [request_item(e, c, i) for i, (e, c) in enumerate(zip(examples, completions))]
    batches = [items[i:i + batch_size] for i in range(0, len(items), batch_size)]
    with ThreadPoolExecutor(max(1, concurrency)) as pool:
        done = pool.map(lambda b: call_with_retries(url, b, token=token, timeout_s=timeout_s, retries=retries,
                                                    backoff_s=backoff_s), batches)
        return [result for batch in done for result in batch]


def remote_reward(example: Example, completion: str, **params: object) -> RewardResult:
    return remote_reward_batch([example], [completion], **params)[0]
