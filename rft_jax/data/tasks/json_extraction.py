"""JSON extraction with a schema: read a short order note, return its fields as JSON.

The schema travels with each example (metadata `schema`), so the `json_schema`
reward can validate the output and give credit per field that matches.
"""

from __future__ import annotations

import numpy as np

from rft_jax.data.example import Example, stable_id
from rft_jax.data.tasks.prompt import PromptStyle

LEVELS = ("easy", "medium", "hard")
CUSTOMERS = ("Alice Chen", "Bruno Silva", "Chiara Rossi", "Dmitri Ivanov", "Emeka Obi", "Fatima Zahra",
             "Greta Berg", "Hiro Tanaka")
PRODUCTS = ("blue kettle", "desk lamp", "wool scarf", "coffee grinder", "yoga mat", "trail backpack")
PLACES = (("Lyon", "France"), ("Osaka", "Japan"), ("Porto", "Portugal"), ("Austin", "USA"), ("Accra", "Ghana"))

SCHEMA_FIELDS = {
    "customer": {"type": "string"},
    "order_id": {"type": "integer"},
    "product": {"type": "string"},
    "quantity": {"type": "integer", "minimum": 1},
    "unit_price": {"type": "number"},
    "date": {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}$"},
    "shipping": {"type": "object", "properties": {"city": {"type": "string"}, "country": {"type": "string"}},
                 "required": ["city", "country"], "additionalProperties": False},
}
LEVEL_FIELDS = {
    "easy": ("customer", "order_id", "product"),
    "medium": ("customer", "order_id", "product", "quantity", "unit_price"),
    "hard": tuple(SCHEMA_FIELDS),
}
INSTRUCTION = "Reply with only the JSON object, in a ```json code block."


def schema_for(level: str) -> dict:
    fields = LEVEL_FIELDS[level]
    return {"type": "object", "properties": {f: SCHEMA_FIELDS[f] for f in fields},
            "required": list(fields), "additionalProperties": False}


def generate_json_extraction(n: int, *, seed: int, levels: tuple[str, ...] = LEVELS,
                             prompt: PromptStyle = PromptStyle(instruction=INSTRUCTION)) -> list[Example]:
    rng = np.random.default_rng(seed)
    examples = []
    for i in range(n):
        level = levels[i % len(levels)]
        record = random_order(rng, i)
        fields = LEVEL_FIELDS[level]
        reference = {f: record[f] for f in fields}
        schema = schema_for(level)
        question = (f"Extract the order details from this note as JSON matching the schema.\n\n"
                    f"Note: {order_note(record, rng, distractor=level == 'hard')}\n\n"
                    f"Schema: {_compact(schema)}")
        messages = prompt.messages(question)
        examples.append(Example(
            id=f"json-{seed}-{i:05d}-{stable_id(messages, reference)[3:11]}", messages=messages,
            reference_answer=reference,
            metadata={"data_source": "rft_jax/json_extraction", "level": level,
                      "difficulty": LEVELS.index(level) + 1, "schema": schema}))
    return examples


def random_order(rng: np.random.Generator, index: int) -> dict:
    city, country = PLACES[int(rng.integers(len(PLACES)))]
    return {
        "customer": str(rng.choice(CUSTOMERS)),
        "order_id": int(rng.integers(1000, 9999)) * 10 + index % 10,
        "product": str(rng.choice(PRODUCTS)),
        "quantity": int(rng.integers(1, 9)),
        "unit_price": round(float(rng.integers(199, 9999)) / 100, 2),
        "date": f"2024-{int(rng.integers(1, 13)):02d}-{int(rng.integers(1, 29)):02d}",
        "shipping": {"city": city, "country": country},
    }


def order_note(r: dict, rng: np.random.Generator, *, distractor: bool) -> str:
    ship = r["shipping"]
    note = (f"On {r['date']}, {r['customer']} placed order #{r['order_id']} for {r['quantity']} x "
            f"{r['product']} at ${r['unit_price']:.2f} each, shipping to {ship['city']}, {ship['country']}.")
    if distractor:  # a second, irrelevant order number and price to test attention
        note += (f" (A previous order #{int(rng.integers(1000, 9999))} for "
                 f"${float(rng.integers(100, 999)):.2f} was cancelled.)")
    return note


def _compact(schema: dict) -> str:
    import json
    return json.dumps(schema, separators=(",", ":"))
