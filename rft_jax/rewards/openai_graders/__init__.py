"""OpenAI's RFT graders, accepted unchanged as reward specs: any JSON object with a `type` key.

    {"type": "string_check", "name": "exact", "input": "{{sample.output_text}}",
     "reference": "{{item.reference_answer}}", "operation": "eq"}

    string_check.py     eq / ne / like / ilike
    text_similarity.py  fuzzy_match, bleu, gleu, meteor, rouge_1..5, rouge_l (cosine refused: needs embeddings)
    python_grader.py    grade(sample, item) in the sandbox
    score_model.py      a grader model, run by the judge reward
    multi.py            sub-graders combined by calculate_output (formula.py)
    templating.py       {{item.x}}, {{sample.output_text}}, {{sample.output_json.x}}
    check.py            configuration-time checks; dispatch.py runs a grader over a batch

`parse_spec` turns such an object into `{"name": "openai_grader", "grader": {...}}`, a row of the reward
registry, so it works wherever a reward spec does: train configs, `aggregate` components, `rft-jax reward
test | serve | lambda`. This package imports nothing here, so spec.py can load check.py without a cycle.
"""
