"""reward_lambda.lambda_handler as an rft_jax reward (`--reward lambda_reward:reward`), in-process.

rft_jax calls a reward as fn(example, completion); a Lambda handler takes (event, context). This adapter
builds the same request items rft_jax's remote reward sends (Bedrock's layout), calls the handler once per
batch, and reads its replies back, so the Lambda's code runs unchanged.
"""

from reward_lambda import lambda_handler

from rft_jax.rewards.remote.protocol import parse_response_item, request_item


def reward_batch(examples, completions):
    items = [request_item(e, c, i) for i, (e, c) in enumerate(zip(examples, completions))]
    replies = {reply["id"]: reply for reply in lambda_handler(items, None)}
    return [parse_response_item(replies[item["id"]]) for item in items]


def reward(example, completion):
    return reward_batch([example], [completion])[0]


reward.batched = reward_batch  # one handler call per batch, as Bedrock sends them
reward.needs_reference = True
