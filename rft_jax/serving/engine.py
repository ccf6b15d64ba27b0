"""Continuous batching: a fixed set of KV-cache slots that requests join and leave at step boundaries.

`sampling.sample` runs a whole batch to completion, so a request arriving one
step later waits for the slowest sequence in flight. Here a background thread
loops: admit waiting requests into free slots (one batched prefill), run one
decode step for every busy slot, hand each slot's new token to its request,
and free the slots that finished. Shapes stay fixed for jit (see
slot_forward.py), so the loop compiles a handful of variants and no more.

Tokens are handed out through a callback on the engine thread; callers must
return quickly (the server only moves them onto its event loop). A request in
reasoning mode carries a think budget (`ThinkBudget`): the loop counts its
thinking tokens and, at the budget, emits and feeds the forced closing tag
instead of what was sampled (serving/reasoning.py).
"""

from __future__ import annotations

import collections
import dataclasses
import threading
import traceback
from collections.abc import Callable

import jax.numpy as jnp
import numpy as np

from rft_jax.model.config import ModelConfig
from rft_jax.sampling.generate import PROMPT_BUCKETS, bucket
from rft_jax.serving.reasoning import ThinkBudget, ThinkState
from rft_jax.serving.slot_forward import decode_slots, empty_cache, prefill_slots

WINDOW_BUCKETS = (128, 256, 512, 1024, 2048, 4096, 8192)


@dataclasses.dataclass(frozen=True)
class EngineConfig:
    """Size of the server's batch and cache."""

    slots: int = 16
    """Sequences decoded together (S); more wait in a queue. Each choice of an n>1 request takes one."""
    max_context: int = 1024
    """Tokens per slot (T), prompt plus completion; longer prompts are refused."""


@dataclasses.dataclass
class Request:
    """One sequence to generate. `emit(token, finish)` is called per token and once with the finish reason
    ("stop" at an end-of-sequence token, "length", "cancelled" or "error: ...") and token None.

    With `think`, max_tokens limits the answer (the tokens after the thinking, forced ones included) and
    `thinking_tokens` holds the thinking's length by the time the finish is emitted."""

    prompt_ids: list[int]
    max_tokens: int
    emit: Callable[[int | None, str | None], None]
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0
    think: ThinkBudget | None = None
    cancelled: bool = False
    thinking_tokens: int = 0

    def cancel(self) -> None:
        """Frees the slot at the next step boundary (a stop string was found, or the client left)."""
        self.cancelled = True


@dataclasses.dataclass
class _Slot:
    request: Request
    token: int  # the last token (sampled, or forced at the think budget), not yet in the cache
    position: int  # where `token` goes
    room: int  # tokens this slot may generate: the context left after the prompt
    think: ThinkState | None
    generated: int = 0
    answered: int = 0  # tokens past the thinking (all of them without a think budget), up to max_tokens


def raw_key(seed: int) -> np.ndarray:
    """The threefry key `jax.random.PRNGKey(seed)` builds (32-bit seeds), made on the host without a dispatch."""
    return np.array([0, seed & 0xFFFFFFFF], np.uint32)


def pow2_at_least(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


class Engine:
    """Owns the slot cache and the decode thread. `submit` is thread-safe."""

    def __init__(self, params: dict, cfg: ModelConfig, *, eos_ids: tuple[int, ...], config: EngineConfig = EngineConfig(),
                 lora: dict | None = None, lora_scale: float = 1.0, dtype=jnp.float32):
        self.params, self.cfg, self.config = params, cfg, config
        self.eos_ids = frozenset(int(i) for i in eos_ids)
        self.lora, self.lora_scale, self.dtype = lora, float(lora_scale), dtype
        self.cache = empty_cache(cfg, config.slots, config.max_context, dtype)
        self.slots: list[_Slot | None] = [None] * config.slots
        self.waiting: collections.deque[Request] = collections.deque()
        self.wake = threading.Condition()
        self.stopping = False
        self.thread: threading.Thread | None = None
        self.steps = 0

    # ---- public -------------------------------------------------------------------------------
    def start(self) -> Engine:
        self.thread = threading.Thread(target=self._loop, name="rft-jax-engine", daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        with self.wake:
            self.stopping = True
            self.wake.notify_all()
        if self.thread is not None:
            self.thread.join(timeout=30)

    def submit(self, request: Request) -> None:
        if len(request.prompt_ids) >= self.config.max_context:
            raise ValueError(f"prompt has {len(request.prompt_ids)} tokens; this server's context is "
                             f"{self.config.max_context} tokens, prompt and completion together")
        if not request.prompt_ids:
            raise ValueError("empty prompt")
        think = request.think
        if think is not None and not (think.forced_ids and think.close_variants and all(think.close_variants)):
            raise ValueError("a think budget needs the closing tag's ids (close_variants and forced_ids)")
        with self.wake:
            self.waiting.append(request)
            self.wake.notify()

    @property
    def busy(self) -> int:
        return sum(s is not None for s in self.slots)

    # ---- the loop -----------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            with self.wake:
                while not self.stopping and not self.waiting and not self.busy:
                    self.wake.wait()
                if self.stopping:
                    break
                admitted = self._take_waiting()
            try:
                self._drop_cancelled()
                if admitted:
                    self._prefill(admitted)
                if self.busy:
                    self._decode()
            except Exception as err:  # a failed step fails its requests, not the server
                traceback.print_exc()
                self._fail_all(f"error: {type(err).__name__}: {err}", admitted)
        self._fail_all("cancelled", [])

    def _take_waiting(self) -> list[tuple[int, Request]]:
        free = [i for i, s in enumerate(self.slots) if s is None]
        taken = []
        while free and self.waiting:
            request = self.waiting.popleft()
            if request.cancelled:
                request.emit(None, "cancelled")
                continue
            taken.append((free.pop(0), request))
        return taken

    def _drop_cancelled(self) -> None:
        for i, slot in enumerate(self.slots):
            if slot is not None and slot.request.cancelled:
                self._finish(i, "cancelled")

    def _finish(self, index: int, reason: str) -> None:
        slot = self.slots[index]
        self.slots[index] = None
        if slot.think is not None:
            slot.request.thinking_tokens = slot.think.thought
        slot.request.emit(None, reason)

    def _fail_all(self, reason: str, admitted: list[tuple[int, Request]]) -> None:
        for i, slot in enumerate(self.slots):
            if slot is not None:
                self._finish(i, reason)
        for i, request in admitted:
            if self.slots[i] is None and not request.cancelled:
                request.emit(None, reason)
        # The cache may have been donated to the failed call; start from a fresh one.
        self.cache = empty_cache(self.cfg, self.config.slots, self.config.max_context, self.dtype)

    def _accept(self, index: int, sampled: int) -> None:
        """Hands a new token to the slot's request (a forced one in place of `sampled` at the think budget;
        it is also what the model reads next) and frees the slot when the sequence is done."""
        slot = self.slots[index]
        token, thinking = (sampled, False) if slot.think is None else slot.think.next(sampled)
        slot.generated += 1
        slot.answered += not thinking
        slot.request.emit(token, None)
        if token in self.eos_ids:
            self._finish(index, "stop")
        elif slot.generated >= slot.room or slot.answered >= slot.request.max_tokens:
            self._finish(index, "length")
        else:
            slot.token, slot.position = token, slot.position + 1

    def _prefill(self, admitted: list[tuple[int, Request]]) -> None:
        n_slots, t = self.config.slots, self.config.max_context
        rows = pow2_at_least(len(admitted))
        length = min(bucket(max(len(r.prompt_ids) for _, r in admitted), PROMPT_BUCKETS), t)
        tokens = np.zeros((rows, length), np.int32)
        lengths = np.ones(rows, np.int32)
        slots = np.full(rows, n_slots, np.int32)  # padding rows point past the cache and are dropped
        seeds = np.zeros((rows, 2), np.uint32)
        temperature, top_p = np.zeros(rows, np.float32), np.ones(rows, np.float32)
        for row, (index, r) in enumerate(admitted):
            tokens[row, :len(r.prompt_ids)] = r.prompt_ids
            lengths[row], slots[row] = len(r.prompt_ids), index
            seeds[row] = raw_key(r.seed)
            temperature[row], top_p[row] = r.temperature, r.top_p
        self.cache, first = prefill_slots(self.params, self.cfg, self.cache, tokens, lengths, slots, seeds,
                                          temperature, top_p, lora=self.lora, lora_scale=self.lora_scale,
                                          dtype=self.dtype)
        first = np.asarray(first)
        for row, (index, r) in enumerate(admitted):
            n = len(r.prompt_ids)
            think = None if r.think is None else ThinkState(r.think)
            self.slots[index] = _Slot(r, token=-1, position=n - 1, room=t - n, think=think)
            self._accept(index, int(first[row]))

    def _decode(self) -> None:
        busy = [i for i, s in enumerate(self.slots) if s is not None]
        rows = min(pow2_at_least(busy[-1] + 1), self.config.slots)
        tokens, positions = np.zeros(rows, np.int32), np.zeros(rows, np.int32)
        seeds = np.zeros((rows, 2), np.uint32)
        temperature, top_p = np.zeros(rows, np.float32), np.ones(rows, np.float32)
        for i in busy:
            s = self.slots[i]
            tokens[i], positions[i] = s.token, s.position
            seeds[i] = raw_key(s.request.seed)
            temperature[i], top_p[i] = s.request.temperature, s.request.top_p
        window = min(bucket(int(positions.max()), WINDOW_BUCKETS), self.config.max_context)
        self.cache, nxt = decode_slots(self.params, self.cfg, self.cache, tokens, positions, seeds, temperature,
                                       top_p, window=window, lora=self.lora, lora_scale=self.lora_scale,
                                       dtype=self.dtype)
        nxt = np.asarray(nxt)
        self.steps += 1
        for i in busy:
            self._accept(i, int(nxt[i]))
