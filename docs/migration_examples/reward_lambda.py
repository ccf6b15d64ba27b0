"""An existing Bedrock RFT reward Lambda, as a team would already have deployed it.

Bedrock invokes `lambda_handler` with a list of samples (the prompt plus the model's answer as the last
message, and the dataset row's reference_answer) and expects one score per sample. This one gives 1.0
when the answer's last number equals the reference. lambda_reward.py lets rft_jax call it unchanged.
"""

import re

NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def score(completion, reference):
    numbers = NUMBER.findall(completion.replace(",", ""))
    return 1.0 if numbers and reference is not None and float(numbers[-1]) == float(reference) else 0.0


def lambda_handler(event, context):
    replies = []
    for sample in event:
        # The reference is top-level in the Nova pages' layout, under "metadata" in Bedrock's: read both.
        reference = sample.get("reference_answer", (sample.get("metadata") or {}).get("reference_answer"))
        value = score(sample["messages"][-1]["content"], reference)
        replies.append({"id": sample["id"], "aggregate_reward_score": value,
                        "metrics_list": [{"name": "correct", "value": value, "type": "Reward"}]})
    return replies
