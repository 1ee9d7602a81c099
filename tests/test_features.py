"""Serving-feature stages (probes/features.py) against real OpenAI-compatible servers.

`python -m probes.features` runs the stage functions an engine module calls, in the engine's
own environment, against a server: vLLM's (it has tool parsers and guided decoding) and
`transformers serve` (it has neither: it ignores tool_choice and response_format). Every stage
passes on a healthy fixture and fails, with its class, on the fixture built to break it; a
failure without a class is classified from the log exactly as a probe's would be.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from conftest import build_fixtures, ROOT, json_lines

from matrix.environments import build_env, ensure_env
from probes import features
from probes.engines import TORCH_CPU, EngineSpec, get_spec
from probes.record import classified
from probes.serving import free_port, start_server

FIXTURES = ("llama", "gemma3_text", "broken-chat-template", "broken-long-rope")
VLLM_TOOL_PARSER = ("--enable-auto-tool-choice", "--tool-call-parser", "hermes")
# Random weights inside a JSON grammar write whitespace until max_tokens: no free whitespace.
VLLM_STRUCTURED = ("--structured-outputs-config", '{"backend": "xgrammar", "disable_any_whitespace": true}')

# `transformers serve` needs the serving extra (FastAPI, uvicorn, openai), built like any
# engine environment.
TRANSFORMERS_SERVE = EngineSpec(
    name="transformers-serve",
    module="probes.engines.transformers_engine",
    package="transformers",
    default_version="5.23.0",
    stages=(),
    requirements=("transformers[serving]=={version}", TORCH_CPU, "tokenizers", "jinja2"),
)


@pytest.fixture(scope="module")
def feature_fixtures(tf_env, tmp_path_factory) -> Path:
    return build_fixtures(tf_env, tmp_path_factory.mktemp("feature-fixtures"), FIXTURES)


def check(python: str, engine: str, *args: str, timeout: float = 600) -> dict[str, dict]:
    """Run `python -m probes.features ARGS` in an engine's env: stage -> end event, with the
    class a probe record would get."""
    proc = subprocess.run(
        [python, "-m", "probes.features", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"},
    )
    log = proc.stdout + "\n" + proc.stderr
    out = {}
    for event in json_lines(proc.stdout):
        if event.get("event") != "end":
            continue
        if event["status"] == "fail" and not event.get("failure_class"):
            verdict = classified(log, engine, event.get("message"))
            event = {**event, "failure_class": verdict.failure_class, "line": verdict.message}
        out[event["stage"]] = event
    assert out, f"no stage events (exit {proc.returncode}):\n{log[-3000:]}"
    return out


# transformers serve


@pytest.fixture(scope="module")
def tf_serve(feature_fixtures, tmp_path_factory) -> dict[str, dict[str, dict]]:
    env = build_env(TRANSFORMERS_SERVE, TRANSFORMERS_SERVE.default_version)
    out = {}
    for name, stages in (
        ("gemma3_text", "chat_template,long_context,tool_call,json_schema"),
        ("broken-chat-template", "chat_template"),
        ("broken-long-rope", "chat_template,long_context"),
    ):
        work = tmp_path_factory.mktemp(f"tf-serve-{name}")
        out[name] = check(
            env.python,
            "transformers",
            "--serve",
            "transformers",
            "--model",
            str(feature_fixtures / name),
            "--workdir",
            str(work),
            "--stages",
            stages,
        )
    return out


def test_transformers_serve_chat_template_and_long_context_pass(tf_serve):
    stages = tf_serve["gemma3_text"]
    assert stages["chat_template"]["status"] == "pass", stages["chat_template"]
    m = stages["chat_template"]["metrics"]
    # The server's prompt is the model's own template, token for token.
    assert m["server_prompt_tokens"] == m["template_tokens"] > 0 and m["system_role"] is True
    long = stages["long_context"]
    assert long["status"] == "pass", long
    m = long["metrics"]
    assert m["window"] == 512 and m["sliding_window"] == 64
    assert m["past_sliding_window"] is True
    assert 0.9 * m["target_prompt_tokens"] <= m["prompt_tokens"] <= 512 - 8


def test_transformers_serve_lacks_tool_calls_and_guided_json(tf_serve):
    # It logs "Ignoring unsupported fields" and answers free text: no call, no JSON.
    stages = tf_serve["gemma3_text"]
    assert (stages["tool_call"]["status"], stages["tool_call"]["failure_class"]) == ("fail", "wrong_output")
    assert "no tool call" in stages["tool_call"]["message"]
    assert (stages["json_schema"]["status"], stages["json_schema"]["failure_class"]) == (
        "fail",
        "wrong_output",
    )


def test_broken_template_is_tokenizer_or_template(tf_serve):
    event = tf_serve["broken-chat-template"]["chat_template"]
    assert (event["status"], event["failure_class"]) == ("fail", "tokenizer_or_template")
    assert "TemplateSyntaxError" in event["message"]


def test_long_rope_fails_past_its_original_window(tf_serve):
    stages = tf_serve["broken-long-rope"]
    assert stages["chat_template"]["status"] == "pass"  # short prompts are fine
    long = stages["long_context"]
    assert (long["status"], long["failure_class"]) == ("fail", "wrong_output"), long
    assert long["metrics"]["prompt_tokens"] > 128


# vLLM


def vllm_server(env, model_dir: Path, workdir: Path):
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    argv = [
        env.python,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(model_dir),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--enforce-eager",
        "--max-model-len",
        "512",
        *VLLM_TOOL_PARSER,
        *VLLM_STRUCTURED,
    ]
    run_env = {
        **get_spec("vllm").env,
        "TMPDIR": str(workdir),
        "VLLM_CACHE_ROOT": str(workdir / "vllm-cache"),
        "HF_HOME": str(workdir / "hf"),
    }
    return start_server(argv, port, workdir / "server.log", ready_path="/health", timeout_s=400, env=run_env)


@pytest.fixture(scope="module")
def vllm(feature_fixtures, tmp_path_factory) -> dict[str, dict[str, dict]]:
    env = ensure_env("vllm")
    out = {}
    for name, stages in (
        ("llama", features.STAGE_FUNCTIONS),
        ("broken-chat-template", ("chat_template", "tool_call", "json_schema")),
    ):
        work = tmp_path_factory.mktemp(f"vllm-{name}")
        server = vllm_server(env, feature_fixtures / name, work)
        try:
            # One stage per run: each log holds only its own stage's words.
            out[name] = {}
            for stage in stages:
                out[name].update(
                    check(
                        env.python,
                        "vllm",
                        "--url",
                        server.base_url,
                        "--model",
                        str(feature_fixtures / name),
                        "--server-log",
                        str(server.log_path),
                        "--parser",
                        " ".join(VLLM_TOOL_PARSER),
                        "--stages",
                        stage,
                    )
                )
        finally:
            server.stop()
    return out


@pytest.mark.parametrize("stage", list(features.STAGE_FUNCTIONS))
def test_vllm_serving_features_pass_on_healthy_model(vllm, stage):
    event = vllm["llama"][stage]
    assert event["status"] == "pass", event


def test_vllm_feature_outputs(vllm):
    stages = vllm["llama"]
    assert stages["tool_call"]["metrics"]["tool_parser"] == " ".join(VLLM_TOOL_PARSER)
    call = stages["tool_call"]["output"]["tool_call"]
    assert call["name"] == "get_weather"
    assert not features.schema_errors(json.loads(call["arguments"]), features.WEATHER_SCHEMA)
    answer = json.loads(stages["json_schema"]["output"]["content"])
    assert not features.schema_errors(answer, features.ANSWER_SCHEMA)
    m = stages["long_context"]["metrics"]
    assert m["window"] == 512 and m["logprobs"] is True  # vLLM returns logprobs: checked
    m = stages["chat_template"]["metrics"]
    assert m["server_prompt_tokens"] == m["template_tokens"]


@pytest.mark.parametrize("stage", ["chat_template", "tool_call", "json_schema"])
def test_vllm_broken_template_fails_every_chat_feature(vllm, stage):
    event = vllm["broken-chat-template"][stage]
    assert (event["status"], event["failure_class"]) == ("fail", "tokenizer_or_template"), event


# Decisions (pure)


@pytest.mark.parametrize(
    "value, errors",
    [
        ({"city": "Paris", "unit": "celsius"}, []),
        ({"city": "Lyon", "unit": "celsius"}, ["$.city: 'Lyon' not one of"]),
        ({"city": "Paris"}, ["$: missing required 'unit'"]),
        ({"city": "Paris", "unit": "celsius", "x": 1}, ["$: unexpected property 'x'"]),
        (float("inf"), ["$: expected object, got float"]),
        ({"city": 3, "unit": "celsius"}, ["$.city: expected string, got int"]),
    ],
)
def test_schema_errors(value, errors):
    found = features.schema_errors(value, features.WEATHER_SCHEMA)
    assert len(found) == len(errors) and all(f.startswith(e) for f, e in zip(found, errors))


def test_schema_types_keep_bool_apart_from_numbers():
    assert features.schema_errors(True, {"type": "integer"})
    assert not features.schema_errors(3, {"type": "integer"})
    assert features.schema_errors(3.5, {"type": "integer"})
    assert not features.schema_errors(False, {"type": "boolean"})


def test_parse_json_answer():
    assert features.parse_json_answer('{"capital": "Paris", "sure": true}', features.ANSWER_SCHEMA) == (
        {"capital": "Paris", "sure": True},
        [],
    )
    value, problems = features.parse_json_answer('{"capital": "Pa', features.ANSWER_SCHEMA)
    assert value is None and problems[0].startswith("not valid JSON")
    assert features.parse_json_answer(None, features.ANSWER_SCHEMA)[1] == ["no content"]


def test_template_from_files_follows_transformers_order():
    cfg = json.dumps({"chat_template": "from-config"})
    assert (
        features.template_from_files({"chat_template.jinja": "jinja", "tokenizer_config.json": cfg})
        == "jinja"
    )
    assert features.template_from_files({"tokenizer_config.json": cfg}) == "from-config"
    named = json.dumps(
        {"chat_template": [{"name": "tool_use", "template": "t"}, {"name": "default", "template": "d"}]}
    )
    assert features.template_from_files({"tokenizer_config.json": named}) == "d"
    assert features.template_from_files({"tokenizer_config.json": "{}"}) is None


def test_render_template_like_transformers():
    template = (
        "{% for m in messages %}{% if m['role'] == 'system' %}"
        "{{ raise_exception('System role not supported') }}{% endif %}"
        "[{{ m['role'] }}]{{ m['content'] | tojson }}{% endfor %}"
        "{% if add_generation_prompt %}[assistant]{% endif %}{{ eos_token }}"
    )
    out = features.render_template(template, [{"role": "user", "content": "hé"}], {"eos_token": "</s>"})
    assert out == '[user]"hé"[assistant]</s>'
    with pytest.raises(Exception, match="System role not supported"):
        features.render_template(template, [{"role": "system", "content": "x"}], {})


@pytest.mark.parametrize(
    "config, expected",
    [
        ({"max_position_embeddings": 512}, (512, None)),
        (
            {
                "max_position_embeddings": 512,
                "sliding_window": 64,
                "layer_types": ["sliding_attention", "full_attention"],
            },
            (512, 64),
        ),
        # A sliding window no layer uses (Qwen 2 style switch off) is not one.
        ({"max_position_embeddings": 512, "sliding_window": 64, "use_sliding_window": False}, (512, None)),
        (
            {"max_position_embeddings": 512, "sliding_window": 64, "layer_types": ["full_attention"]},
            (512, None),
        ),
        ({"text_config": {"max_position_embeddings": 1024, "sliding_window": 128}}, (1024, 128)),
        ({"n_positions": 256}, (256, None)),
    ],
)
def test_context_windows(config, expected):
    assert features.context_windows(config) == expected


def test_long_prompt_target():
    assert features.long_prompt_target(512, None) == (int((512 - 8) * 0.97), False)
    target, capped = features.long_prompt_target(131072, 4096, limit=8192)
    assert capped and 4096 < target < 8192
    # When 97% would stay inside the sliding window, go to the end of the window.
    assert features.long_prompt_target(128, 118) == (120, False)


def test_answer_logprobs_reads_nan_and_strings():
    body = {
        "choices": [
            {
                "logprobs": {
                    "content": [
                        {"logprob": -0.5},
                        {"logprob": float("nan")},
                        {"logprob": "-inf"},
                        {"logprob": None},
                    ]
                }
            }
        ]
    }
    values = features.answer_logprobs(body)
    assert values[0] == -0.5 and values[1] != values[1] and values[2] == float("-inf")
    assert values[3] is None
    assert features.answer_logprobs({"choices": [{"logprobs": None}]}) is None


def test_vllm_engine_runs_the_feature_stages_as_matrix_stages(feature_fixtures, validate_record):
    """The same stages through `dayone probe --engine vllm`: records like any other stage."""
    from conftest import run_dayone

    stages = ["serve", "chat_template", "tool_call", "json_schema", "long_context"]
    args = [a for s in stages for a in ("--stage", s)]
    good = json_lines(
        run_dayone(
            "probe",
            str(feature_fixtures / "llama"),
            "--engine",
            "vllm",
            *args,
            "--json",
            "--no-store",
            timeout=1200,
        ).stdout
    )
    assert [(r["stage"], r["status"]) for r in good] == [(s, "pass") for s in stages]
    assert "hermes" in json.dumps(good[2]["metrics"])  # the parser flag it needed, recorded
    bad = json_lines(
        run_dayone(
            "probe",
            str(feature_fixtures / "broken-chat-template"),
            "--engine",
            "vllm",
            "--stage",
            "chat_template",
            "--stage",
            "tool_call",
            "--json",
            "--no-store",
            timeout=1200,
        ).stdout
    )
    # tool_call does not need chat_template: it still runs, and meets the same broken template
    assert [(r["status"], r["failure_class"]) for r in bad] == [("fail", "tokenizer_or_template")] * 2
    for r in good + bad:
        validate_record(r)


# Random weights: no verdict where only trained weights could give one


def _body(
    content: str | None, finish: str, calls: list | None = None, completion_tokens: int | None = None
) -> dict:
    body: dict = {
        "choices": [{"message": {"content": content, "tool_calls": calls}, "finish_reason": finish}]
    }
    if completion_tokens is not None:
        body["usage"] = {"completion_tokens": completion_tokens}
    return body


def _call(name: str, arguments: str) -> list:
    return [{"id": "call_0", "type": "function", "function": {"name": name, "arguments": arguments}}]


SEEN = '<tool_call>\n{"name": "get_weather", "arguments": { \n\n\n' + " \n" * 120


@pytest.mark.parametrize(
    "body, expected",
    [
        # unparsed call left in content, cut at max_tokens (vLLM, hermes parser): the one seen
        (_body(SEEN, "length"), "left in content"),
        # ... where the engine reports `stop` / `tool_calls` for a named call, or nothing
        (_body(SEEN, "stop", completion_tokens=256), "at max_tokens"),
        (_body(SEEN, "tool_calls", calls=[]), "unclosed"),
        (_body(SEEN, None), "unclosed"),
        (_body('{"name": "get_weather", "arguments": {\r\n', "length"), "left in content"),
        # parsed into tool_calls with the arguments cut off or whitespace only
        (_body(None, "length", _call("get_weather", '{ "city": "Pa')), "call's arguments"),
        (_body("", "tool_calls", _call("get_weather", "  \n\n  ")), "call's arguments"),
        (_body(None, "stop", _call("get_weather", "")), "call's arguments"),
        (_body(None, "length", _call("get_weather", "{\n\n\n\n")), "at max_tokens"),
        # judged: a whole call (right or wrong), another name, or no call at all
        (_body(None, "tool_calls", _call("get_weather", '{"city": "Paris"}')), None),
        (_body(None, "tool_calls", _call("get_weather", '{"town": 3}')), None),
        (_body(None, "length", _call("get_time", "{  ")), None),
        (_body('<tool_call>\n{"name": "get_weather", "arguments": {}}', "stop"), None),
        (_body("Paris is sunny, about twenty degrees", "length"), None),
        (_body("Paris is sunny, about twenty degrees", "stop", completion_tokens=9), None),
        ({"error": "bad request"}, None),
        ({"choices": []}, None),
    ],
)
def test_unfinished_forced_call_in_every_shape(body, expected):
    got = features.unfinished_call(body, "get_weather", 256)
    assert (got is None) if expected is None else (expected in got), got


@pytest.mark.parametrize(
    "meta, expected",
    [
        ({"tier": "arch"}, True),
        ({"weights": "random"}, True),
        ({"tier": "arch", "tokenizer": "release"}, True),
        ({"id": "Qwen/Qwen3-0.6B"}, False),
        (None, False),  # a release is judged
    ],
)
def test_unfinished_forced_call_on_random_weights_is_no_verdict(tmp_path, meta, expected):
    if meta is not None:
        (tmp_path / "dayone.json").write_text(json.dumps(meta))
    got = features.unfinished_call_of_random_weights(_body(SEEN, "length"), tmp_path, "get_weather", 256)
    assert bool(got) is expected


def test_a_stage_without_verdict_blocks_nothing_a_failure_blocks_only_dependents(tmp_path):
    from probes.record import stage_verdicts
    from probes.runner import ProbeOutcome

    def outcome(*ends):
        events = [
            {"event": "end", "stage": s, "status": st, "failure_class": fc, "message": m}
            for s, st, fc, m in ends
        ]
        return ProbeOutcome(events, 0, False, False, 0.0, tmp_path / "probe.log", "", 1.0, 0.0, [])

    stages = ["serve", "tool_call", "json_schema", "long_context"]
    got = stage_verdicts(
        stages,
        outcome(
            ("serve", "pass", None, None),
            ("tool_call", "skipped", None, "no verdict"),
            ("json_schema", "pass", None, None),
            ("long_context", "pass", None, None),
        ),
        "vllm",
    )
    assert [v.status for _s, v, _e in got] == ["pass", "skipped", "pass", "pass"]
    got = stage_verdicts(
        stages,
        outcome(
            ("serve", "pass", None, None),
            ("tool_call", "fail", "wrong_output", "no call"),
            ("json_schema", "pass", None, None),
            ("long_context", "pass", None, None),
        ),
        "vllm",
    )
    assert [v.status for _s, v, _e in got] == ["pass", "fail", "pass", "pass"]
    got = stage_verdicts(stages, outcome(("serve", "fail", "wrong_output", "no answer")), "vllm")
    assert [v.status for _s, v, _e in got] == ["fail", "skipped", "skipped", "skipped"]
    assert got[1][1].message == "blocked by serve (fail)"


def test_a_multimodal_copy_without_processor_files_is_ours_to_name(tmp_path):
    from probes.modelinfo import incomplete_multimodal_copy

    mm = {"model_type": "gemma4", "vision_config": {"hidden_size": 64}}
    (tmp_path / "dayone.json").write_text('{"tier": "arch"}')
    assert "no processor files" in incomplete_multimodal_copy(tmp_path, mm)
    assert incomplete_multimodal_copy(tmp_path, {"model_type": "llama"}) is None  # text only
    (tmp_path / "preprocessor_config.json").write_text("{}")
    assert incomplete_multimodal_copy(tmp_path, mm) is None  # whole
    release = tmp_path / "release"
    release.mkdir()
    assert incomplete_multimodal_copy(release, mm) is None  # a release is judged as it is
    fuyu = tmp_path / "fuyu"  # no tower sub-config: the load's own words say it
    fuyu.mkdir()
    (fuyu / "dayone.json").write_text('{"tier": "arch"}')
    said = "OSError: Can't load image processor for '/x/fuyu'."
    assert incomplete_multimodal_copy(fuyu, {"model_type": "fuyu"}) is None
    assert "no processor files" in incomplete_multimodal_copy(fuyu, {"model_type": "fuyu"}, said)
    towerless = {"model_type": "gemma4", "vision_config": None, "audio_config": None}
    (tmp_path / "preprocessor_config.json").unlink()
    assert "vision_config null" in incomplete_multimodal_copy(tmp_path, towerless)


def test_a_token_the_fixture_tokenizer_lacks_is_ours_to_name(tmp_path):
    """vLLM's Gemma 3 processor reads vocab["\\n\\n"], Fuyu's "|SPEAKER|": a copy carrying the
    fixtures' tokenizer (the release's vocabulary is an uncatalogued LFS file) lacks them."""
    from probes.modelinfo import incomplete_multimodal_copy

    (tmp_path / "dayone.json").write_text('{"tier": "arch", "tokenizer": "fixture"}')
    (tmp_path / "tokenizer.json").write_text(
        json.dumps(
            {
                "model": {"vocab": {"a": 0, "\n": 1}},
                "added_tokens": [{"id": 2, "content": "<|image|>", "special": True}],
            }
        )
    )
    config = {"model_type": "gemma3", "vision_config": {"hidden_size": 64}}
    (tmp_path / "preprocessor_config.json").write_text("{}")
    why = incomplete_multimodal_copy(tmp_path, config, "KeyError: '\\n\\n'")
    assert why and "no token '\\n\\n'" in why
    fuyu = incomplete_multimodal_copy(tmp_path, {"model_type": "fuyu"}, 'KeyError: "|SPEAKER|"')
    assert fuyu and "'|SPEAKER|'" in fuyu
    # a token it has, another error, or the release's own vocabulary: the engine's verdict
    assert incomplete_multimodal_copy(tmp_path, config, "KeyError: '<|image|>'") is None
    assert incomplete_multimodal_copy(tmp_path, config, "KeyError: 'a'") is None
    assert incomplete_multimodal_copy(tmp_path, config, "ValueError: '\\n\\n'") is None
    # a weight the engine's loader looks up by name is the engine's KeyError (vLLM's DBRX)
    assert incomplete_multimodal_copy(tmp_path, config, "KeyError: 'blocks.0.ffn.experts.w13_weight'") is None
    # nor is a config key (SGLang's DeepSeek-V4: rope_scaling["original_max_position_embeddings"])
    assert (
        incomplete_multimodal_copy(tmp_path, config, "KeyError: 'original_max_position_embeddings'") is None
    )
    (tmp_path / "dayone.json").write_text('{"tier": "arch", "tokenizer": "release"}')
    assert incomplete_multimodal_copy(tmp_path, config, "KeyError: '\\n\\n'") is None
