"""The workload's long prompt is longer than every shrunk window and chunk, under every tokenizer
a copy can carry (a release's own, the fixtures' in each style), and still fits the fixtures'
and the engines' context windows. Counted with the real tokenizers in the transformers env."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from conftest import run_in_tree
from probes import workload
from probes.shrink import load_rules

ROOT = Path(__file__).resolve().parent.parent
RELEASES = ROOT / "probes" / "releases"
FIXTURE_POSITIONS = 512  # probes/fixtures.py COMMON; llama.cpp's n_ctx default is the same


def run_tf(tf_env, script: str) -> dict:
    proc = run_in_tree([tf_env.python, "-c", textwrap.dedent(script)], timeout=600)
    # the last line holding the result (transformers may print warnings on stdout)
    line = next((x for x in reversed(proc.stdout.splitlines()) if x.startswith("RESULT ")), None)
    assert line, proc.stdout[-2000:] + proc.stderr[-2000:]
    return json.loads(line[len("RESULT ") :])


def test_the_long_prompt_is_the_last_and_longer_than_the_shrunk_sizes():
    rules = load_rules()
    assert workload.LONG_PROMPT_MIN_TOKENS >= 64
    assert workload.LONG_PROMPT_MIN_TOKENS > max(rules.targets["window"], rules.targets["chunk"])
    assert len(workload.PROMPTS[-1]) > 4 * workload.LONG_PROMPT_MIN_TOKENS  # chars, roughly


def test_long_prompt_has_64_tokens_under_every_release_and_fixture_tokenizer(tf_env):
    dirs = sorted(
        str(p)
        for p in RELEASES.glob("*/*")
        if any((p / f).exists() for f in ("tokenizer.json", "vocab.json"))
        and not (p / "configuration.json").exists()
    )  # remote-code tokenizers aside
    counts = run_tf(
        tf_env,
        f"""
        import json, tempfile
        from pathlib import Path
        from transformers import AutoTokenizer
        from probes import workload
        from probes.fixtures import TOKENIZER_STYLES, build_tokenizer
        long = workload.PROMPTS[-1]
        out = {{}}
        for d in {dirs!r}:
            tok = AutoTokenizer.from_pretrained(d)
            out[Path(d).name] = len(tok(long, add_special_tokens=False)["input_ids"])
        for style in TOKENIZER_STYLES:
            with tempfile.TemporaryDirectory() as t:
                tok = build_tokenizer(Path(t), style=style)
                out["fixture-" + style] = len(tok(long, add_special_tokens=False)["input_ids"])
        print("\\nRESULT " + json.dumps(out))
    """,
    )
    assert len(counts) >= 10, counts
    short = {k: n for k, n in counts.items() if n < workload.LONG_PROMPT_MIN_TOKENS}
    assert not short, short
    # the fixtures' tokenizers split finest: the prompt and its answer still fit their window
    worst = max(counts.values())
    assert worst + workload.MAX_NEW_TOKENS <= FIXTURE_POSITIONS, counts


def test_long_prompt_crosses_the_window_of_a_shrunk_sliding_window_release(tf_env, tmp_path):
    """Gemma 3 1B's release (window 512) shrunk: its window is small and the long prompt, in
    the copy's own tokenizer, is several windows long."""
    out = tmp_path / "gemma3_text"
    got = run_tf(
        tf_env,
        f"""
        import json
        from transformers import AutoTokenizer
        from probes import workload
        from probes.shrink import sweep
        row, = sweep({str(tmp_path)!r}, ["gemma3_text"])  # as the arch tier builds it
        assert row["status"] == "ok", row
        tok = AutoTokenizer.from_pretrained({str(out)!r})
        cfg = json.load(open({str(out / "config.json")!r}))
        print("\\nRESULT " + json.dumps({{"tokens": len(tok(workload.PROMPTS[-1])["input_ids"]),
                          "window": cfg["sliding_window"], "pattern": cfg.get("sliding_window_pattern"),
                          "layers": cfg["num_hidden_layers"],
                          "positions": cfg["max_position_embeddings"],
                          "release": json.load(open({str(out / "dayone.json")!r}))}}))
    """,
    )
    assert got["release"]["lineage"]["repo"] == "google/gemma-3-1b-it", got["release"]
    assert got["window"] == load_rules().targets["window"]
    assert got["pattern"] == 6 and got["layers"] == 6  # 5 sliding : 1 full, as released
    assert got["tokens"] >= workload.LONG_PROMPT_MIN_TOKENS
    assert got["tokens"] > 4 * got["window"], got
    assert got["tokens"] + workload.MAX_NEW_TOKENS <= got["positions"]
