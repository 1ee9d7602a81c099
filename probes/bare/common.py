# The helpers every bare reproduction shares (standard library only). This file is a template:
# probes/reproduce.py writes its text into each script after the constants it needs (MODEL,
# PROMPTS, ...). Never imported by dayone.
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

NO_VERDICT = 3  # exit status: the bare check cannot decide this stage here (not a pass)


def say(text):
    print(f"dayone-bare: {text}", flush=True)


def fail(text):
    """The stage fails bare: say why (the engine's own words are above) and exit 1."""
    say(text)
    sys.exit(1)


def no_verdict(text):
    say(f"no verdict: {text}")
    sys.exit(NO_VERDICT)


def passed(text="the stage passes"):
    say(f"pass: {text}")
    sys.exit(0)


def http_json(url, payload=None, timeout=300.0):
    data = json.dumps(payload).encode() if payload is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, body = resp.status, resp.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read().decode("utf-8", "replace")
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """The engine's own server command, its log on our stdout when it fails."""

    def __init__(self, argv, ready_path, timeout_s, env=None, log_path=None):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        argv = [a.replace("{port}", str(self.port)) for a in argv]
        say("starting: " + " ".join(argv))
        self.log_path = log_path or os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                 f"bare-server-{os.getpid()}.log")
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True,
                                     env={**os.environ, **(env or {})})
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.show_log()
                fail(f"server exited with status {self.proc.returncode} before it was ready")
            try:
                if http_json(self.base + ready_path, timeout=2)[0] == 200:
                    return
            except (urllib.error.URLError, OSError, TimeoutError):
                pass
            time.sleep(0.3)
        self.stop()
        self.show_log()
        fail(f"server not ready within {timeout_s:.0f} s")

    def show_log(self, lines=200):
        try:
            with open(self.log_path, errors="replace") as fh:
                print("".join(fh.readlines()[-lines:]), flush=True)
        except OSError:
            pass

    def chat(self, messages, **params):
        return http_json(self.base + "/v1/chat/completions",
                         {"model": SERVED_NAME, "messages": messages, "temperature": 0, **params})

    def stop(self):
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def refused(server, what, status, body):
    time.sleep(0.5)  # servers log the traceback after they answer
    server.show_log(60)
    server.stop()
    fail(f"server answered {what} with HTTP {status}: {str(body)[:1000]}")


def tokens_line(label, ids):
    print(f"{label}: {json.dumps(list(ids))}", flush=True)


def check_parity(completions):
    """The engine's greedy tokens against the transformers reference, by the probe's own rule
    (check_logprobs_close, written into this script)."""
    with open(REFERENCE_PATH, encoding="utf-8") as fh:
        data = json.load(fh)
    reference = data["output"]["completions"]
    horizons = data.get("precision_horizons") or {}
    by_prompt = {c["prompt"]: c for c in completions}
    for ref in reference:
        got = by_prompt.get(ref["prompt"], {})
        print(f"prompt {ref['prompt']!r}", flush=True)
        tokens_line("  engine   ", got.get("token_ids", []))
        tokens_line("  reference", ref["token_ids"])
        first = next((i for i, (a, b) in enumerate(zip(ref["token_ids"], got.get("token_ids", [])))
                      if a != b), None)
        print(f"  first divergent position: {first}", flush=True)
    result = check_logprobs_close(reference, completions, top_k=TOP_K,
                                  max_logprob_gap=MAX_LOGPROB_GAP, horizons=horizons,
                                  noise=data.get("logprob_noise"))
    if result.status == "fail":
        fail(result.message)
    passed(f"{result.status}: {result.message}")


def chat_template_tokens(messages):
    """Tokens of the model's own chat template for MESSAGES (transformers, as servers use it);
    None when the model ships no template."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(MODEL, trust_remote_code=TRUST_REMOTE_CODE)
    if not getattr(tok, "chat_template", None):
        return None
    ids = tok.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=True)
    if hasattr(ids, "keys"):
        ids = ids["input_ids"]
    return len(ids)


def answered(body):
    """The serve stage's answer rule (probes/features.py:stage_serve): the assistant answered
    with text and at least one token."""
    if not isinstance(body, dict):
        return False
    message = ((body.get("choices") or [{}])[0].get("message") or {})
    say(f"answer {message}, usage {body.get('usage')}")
    return message.get("role") in (None, "assistant") and isinstance(message.get("content"), str) \
        and bool(message.get("content")) and bool((body.get("usage") or {}).get("completion_tokens"))


def served_check(server, stage):
    """The serving stages, the same requests and checks as the probe's (probes/features.py,
    probes/throughput.py), against SERVER. Exits with the verdict."""
    if stage == "serve":
        messages = [dict(m) for m in CHAT_MESSAGES]
        status, body = server.chat(messages, max_tokens=MAX_NEW_TOKENS,
                                   min_tokens=MAX_NEW_TOKENS, ignore_eos=True)
        if status != 200 or not isinstance(body, dict):
            refused(server, "a chat request", status, body)
        server.stop()
        usage = body.get("usage") or {}
        if not answered(body):
            fail(f"dayone-wrong-output: empty or malformed answer: {str(body)[:500]}")
        expected = chat_template_tokens(messages)
        if expected is not None and usage.get("prompt_tokens") != expected:
            fail(f"server prompt has {usage.get('prompt_tokens')} tokens; the model's chat "
                 f"template renders {expected}: the server did not use the model's template")
        passed()
    if stage == "chat_template":
        messages = [dict(m) for m in TEMPLATE_TURNS]
        try:
            expected = chat_template_tokens(messages)
        except Exception as exc:
            if "system" not in str(exc).lower():
                raise
            messages = messages[1:]
            expected = chat_template_tokens(messages)
        if expected is None:
            fail("chat_template is not set: the model ships no chat template")
        status, body = server.chat(messages, max_tokens=4)
        if status != 200:
            refused(server, "a chat request", status, body)
        server.stop()
        got = (body.get("usage") or {}).get("prompt_tokens")
        if got is not None and abs(got - expected) > 1:
            fail(f"the server's prompt has {got} tokens, the model's chat template gives "
                 f"{expected}: the server did not use the model's template")
        passed(f"prompt of {got} tokens, template {expected}")
    if stage == "tool_call":
        status, body = server.chat(
            [{"role": "user", "content": "What is the weather in Paris, in celsius?"}],
            max_tokens=256, tools=[WEATHER_TOOL],
            tool_choice={"type": "function", "function": {"name": "get_weather"}})
        if status != 200:
            refused(server, "a tool-call request", status, body)
        server.stop()
        choice = (body.get("choices") or [{}])[0]
        message = choice.get("message") or {}
        calls = message.get("tool_calls") or []
        say(f"answer: {json.dumps(message)[:1000]}")
        if not calls and choice.get("finish_reason") == "length" and RANDOM_WEIGHTS \
                and '"get_weather"' in str(message.get("content") or ""):
            no_verdict("random weights ran out of max_tokens inside the forced call")
        if not calls:
            fail("dayone-wrong-output: no tool call in the answer")
        function = calls[0].get("function") or {}
        if function.get("name") != "get_weather":
            fail(f"dayone-wrong-output: tool call names {function.get('name')!r}, not get_weather")
        args = function.get("arguments")
        try:
            value = args if isinstance(args, dict) else json.loads(args)
        except (TypeError, ValueError):
            fail(f"dayone-wrong-output: tool call arguments are not JSON: {args!r}")
        problems = schema_errors(value, WEATHER_TOOL["function"]["parameters"])
        if problems:
            fail(f"dayone-wrong-output: tool call arguments: {'; '.join(problems)}")
        passed(f"tool call {function}")
    if stage == "json_schema":
        status, body = server.chat(
            [{"role": "user", "content": "What is the capital of France? Answer in JSON."}],
            max_tokens=96, response_format={"type": "json_schema", "json_schema": {
                "name": "answer", "schema": ANSWER_SCHEMA, "strict": True}})
        if status != 200:
            refused(server, "a json_schema request", status, body)
        server.stop()
        content = ((body.get("choices") or [{}])[0].get("message") or {}).get("content")
        say(f"answer {content!r}")
        try:
            problems = schema_errors(json.loads(content), ANSWER_SCHEMA)
        except (TypeError, ValueError) as exc:
            problems = [f"not valid JSON ({exc})"]
        if problems:
            fail(f"dayone-wrong-output: guided JSON answer: {'; '.join(problems)}")
        passed()
    if stage == "long_context":
        def ask(repeats, max_tokens=1):
            text = "Read this and answer in one word." + LONG_FILLER * repeats
            extra = {"logprobs": True, "top_logprobs": 1} if max_tokens > 1 else {}
            return server.chat([{"role": "user", "content": text}], max_tokens=max_tokens,
                               **extra)
        counts = []
        for repeats in (1, 9):
            status, body = ask(repeats)
            if status != 200:
                refused(server, "a short calibration prompt", status, body)
            counts.append(body["usage"]["prompt_tokens"])
        per_repeat = (counts[1] - counts[0]) / 8
        repeats = max(1, int((LONG_TARGET - (counts[0] - per_repeat)) / per_repeat))
        expected = int(counts[0] - per_repeat + per_repeat * repeats)
        status, body = ask(repeats, LONG_MAX_TOKENS)
        if status != 200:
            refused(server, f"a {expected}-token prompt (window {LONG_WINDOW})", status, body)
        server.stop()
        usage = body.get("usage") or {}
        choice = (body.get("choices") or [{}])[0]
        content = (choice.get("message") or {}).get("content")
        say(f"{usage} answer {content!r}")
        got = usage.get("prompt_tokens")
        if got is not None and got < expected * 0.98:
            fail(f"dayone-wrong-output: the server kept {got} of about {expected} prompt "
                 f"tokens (truncated)")
        lps = [c.get("logprob") for c in ((choice.get("logprobs") or {}).get("content") or [])]
        bad = [v for v in lps if not isinstance(v, (int, float)) or v != v or abs(v) == float("inf")]
        if bad:
            fail(f"dayone-wrong-output: non-finite logprobs answering a {got}-token prompt")
        if not usage.get("completion_tokens") or not content:
            fail(f"dayone-wrong-output: no text for a {got}-token prompt")
        passed()
    if stage == "throughput":
        done = 0
        for _ in range(THROUGHPUT_REQUESTS):
            status, body = server.chat([{"role": "user", "content": THROUGHPUT_PROMPT}],
                                       max_tokens=THROUGHPUT_OUTPUT_LEN)
            done += status == 200 and bool((body.get("usage") or {}).get("completion_tokens"))
        server.stop()
        if not done:
            server.show_log(60)
            fail("throughput: no request completed")
        passed(f"{done} of {THROUGHPUT_REQUESTS} requests completed (the `slow` verdict "
               "against the transformers reference is not decided bare)")
    no_verdict(f"no bare check for stage {stage!r}")
