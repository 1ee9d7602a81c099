"""The shared throughput stage: its figures (vLLM bench's definitions), its verdict, its client.

The stage against real servers is tested in test_vllm.py / test_sglang.py; here the pure parts,
the streaming client against a local server-sent-events endpoint with known timing, and the
transformers reference figure with the real transformers.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import json_answer
from probes import throughput as tp


def test_percentile_matches_numpys_linear_interpolation():
    # numpy.percentile([1, 2, 3, 4], 99) == 3.97; ([5], 99) == 5; ([], 99) -> 0 by convention
    assert tp.percentile([4.0, 1.0, 3.0, 2.0], 99) == pytest.approx(3.97)
    assert tp.percentile([1.0, 2.0, 3.0, 4.0], 50) == pytest.approx(2.5)
    assert tp.percentile([5.0], 99) == 5.0
    assert tp.percentile([], 99) == 0.0


def test_summarize_uses_vllm_bench_definitions():
    a = tp.RequestResult(ok=True, ttft=0.1, itl=[0.02, 0.03], latency=0.15, output_tokens=3, prompt_tokens=10)
    b = tp.RequestResult(ok=True, ttft=0.2, itl=[0.05], latency=0.35, output_tokens=4, prompt_tokens=10)
    bad = tp.RequestResult(ok=False, error="HTTP 500")
    m = tp.summarize([a, b, bad], duration_s=0.5)
    assert (m["completed"], m["failed"]) == (2, 1)
    assert m["total_output_tokens"] == 7 and m["total_input_tokens"] == 20
    assert m["request_throughput"] == pytest.approx(4.0)
    assert m["output_throughput"] == pytest.approx(14.0)
    assert m["total_token_throughput"] == pytest.approx(54.0)
    assert m["mean_ttft_ms"] == pytest.approx(150.0)
    # TPOT per request = (latency - ttft) / (output tokens - 1): 25 ms and 50 ms
    assert m["mean_tpot_ms"] == pytest.approx(37.5) and m["median_tpot_ms"] == pytest.approx(37.5)
    # ITL: every gap of every request, pooled
    assert m["mean_itl_ms"] == pytest.approx((20 + 30 + 50) / 3)
    assert m["median_e2el_ms"] == pytest.approx(250.0)
    assert m["p99_e2el_ms"] == pytest.approx(150 + 0.99 * 200)


def test_median_over_repeats_and_flat_names():
    runs = [{"output_throughput": 10.0}, {"output_throughput": 30.0}, {"output_throughput": 20.0}]
    assert tp.median_of(runs) == {"output_throughput": 20.0}
    flat = tp.flat_metrics({1: {"output_throughput": 1.23456}, 4: {"completed": 8}})
    assert flat == {"c1_output_throughput": 1.2346, "c4_completed": 8}


def _figs(c1: float, c4: float, failed: int = 0, completed: int = 8) -> dict:
    return {
        1: {"output_throughput": c1, "failed": failed, "completed": completed},
        4: {"output_throughput": c4, "failed": 0, "completed": completed},
    }


def test_verdict_far_below_reference_is_degraded_slow():
    ref = {1: {"output_throughput": 100.0}, 4: {"output_throughput": 400.0}}
    status, klass, msg, ratios = tp.verdict(_figs(150, 800), ref)
    assert (status, klass) == ("pass", None)
    assert ratios == {"c1_x_reference": 1.5, "c4_x_reference": 2.0}
    assert "2x the transformers reference" in msg
    # Far below at the highest concurrency (batching is what a server is for): slow.
    status, klass, msg, _ = tp.verdict(_figs(150, 40), ref)
    assert (status, klass) == ("degraded", "slow") and "0.1x" in msg
    # The threshold is an option.
    assert tp.verdict(_figs(150, 40), ref, slow_below=0.05)[0] == "pass"


def test_verdict_failures():
    assert tp.verdict(_figs(10, 10, completed=0), None)[0] == "fail"
    status, klass, msg, _ = tp.verdict(_figs(10, 10, failed=2), None)
    assert (status, klass) == ("degraded", "failed_requests") and "failed" in msg
    status, _, msg, ratios = tp.verdict(_figs(10, 10), None)
    assert status == "pass" and ratios == {} and "no reference" in msg


def test_options_workload_defaults_and_overrides():
    assert tp.options_workload({}) == {
        "input_words": 32,
        "output_len": 32,
        "concurrency": (1, 4),
        "prompts_per_slot": 4,
        "repeats": 3,
    }
    o = tp.options_workload({"throughput": {"concurrency": [1, 8], "repeats": 5}})
    assert o["concurrency"] == (1, 8) and o["repeats"] == 5
    assert len(tp.user_prompt(32).split()) == 32


# The streaming client against a local SSE endpoint with known timing
FIRST_S, GAP_S, CHUNKS = 0.15, 0.05, 5


class _Streamer(BaseHTTPRequestHandler):
    """Streams like an OpenAI-compatible server: role chunk, content chunks, usage, [DONE]."""

    def do_POST(self):  # noqa: N802 (http.server's name)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append(body)
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()

        def send(obj):
            data = obj if isinstance(obj, str) else json.dumps(obj)
            self.wfile.write(f"data: {data}\n\n".encode())
            self.wfile.flush()

        time.sleep(FIRST_S)
        send({"choices": [{"index": 0, "delta": {"role": "assistant", "content": "a"}}]})
        for i in range(CHUNKS - 1):
            time.sleep(GAP_S)
            send({"choices": [{"index": 0, "delta": {"content": f" w{i}"}}]})
        send({"choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": CHUNKS}})
        send("[DONE]")

    def log_message(self, *args):
        pass


@pytest.fixture()
def sse_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Streamer)
    server.requests = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_stream_chat_times_first_chunk_and_gaps(sse_server):
    url = f"http://127.0.0.1:{sse_server.server_address[1]}"
    r = tp.stream_chat(url, "m", [{"role": "user", "content": "hi"}], output_len=CHUNKS)
    assert r.ok and r.error is None
    assert FIRST_S <= r.ttft < FIRST_S + 0.15
    assert len(r.itl) == CHUNKS - 1 and all(GAP_S * 0.8 <= g < GAP_S + 0.15 for g in r.itl)
    assert (r.output_tokens, r.prompt_tokens) == (CHUNKS, 11)
    assert r.text == "a w0 w1 w2 w3"
    assert r.latency == pytest.approx(r.ttft + sum(r.itl), abs=1e-6)
    sent = sse_server.requests[0]
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    assert sent["ignore_eos"] is True and sent["min_tokens"] == sent["max_tokens"] == CHUNKS


def test_benchmark_at_two_concurrencies(sse_server):
    url = f"http://127.0.0.1:{sse_server.server_address[1]}"
    figures, errors = tp.benchmark(
        url, "m", output_len=CHUNKS, concurrency=(1, 3), prompts_per_slot=2, repeats=2
    )
    assert errors == []
    assert figures[1]["completed"] == 2 and figures[3]["completed"] == 6
    # Three at a time take about as long as one at a time: ~3x the request throughput.
    ratio = figures[3]["request_throughput"] / figures[1]["request_throughput"]
    assert 2.0 < ratio < 3.5
    assert figures[1]["median_tpot_ms"] == pytest.approx(GAP_S * 1000, rel=0.5)


def test_unreachable_server_is_a_failed_request():
    r = tp.stream_chat("http://127.0.0.1:9", "m", [{"role": "user", "content": "x"}], 4, timeout=5)
    assert not r.ok and r.error


# The transformers reference, with the real transformers
def test_reference_figures_with_real_transformers(tf_env, fixtures_dir):
    code = (
        "import json, sys; from pathlib import Path; "
        "from probes.throughput import reference_figures; "
        "f, about = reference_figures(Path(sys.argv[1]), output_len=8, concurrency=(1, 2), "
        "prompts_per_slot=1, repeats=1); print(json.dumps({'f': f, 'about': about}))"
    )
    data = json_answer([tf_env.python, "-c", code, str(fixtures_dir / "llama")], timeout=300)
    for c in ("1", "2"):
        assert data["f"][c]["output_throughput"] > 0 and data["f"][c]["mean_e2el_ms"] > 0
    assert data["about"]["reference_engine"].startswith("transformers ")
    # The user turn rendered with the model's chat template: more tokens than its 32 words.
    assert data["about"]["reference_prompt_tokens"] > 32
