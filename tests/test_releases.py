"""The reference releases catalogue, its refresh from the (fake) hub, and copies shrunk from it.

A copy shrunk from a release says what the release says: its class names, its config keys (none
added, none renamed), its head_dim and q/kv ratio, its dtype; and transformers still builds and
generates with it.
"""

from __future__ import annotations

import json
import sys
import textwrap

import pytest

from conftest import json_answer, run_in_tree
from probes import releases
from probes.shrink import load_rules
from tests.fakehub import FakeHub


# Pure: the catalogue


def test_packaged_catalogue_reads_every_entry_with_its_source():
    found = releases.entries()
    assert len(releases.model_types()) == 33 and len(found) == 35
    for r in found:
        assert r.repo.count("/") == 1 and "config.json" in r.files, r
        assert r.source.startswith("github:") and r.commit and r.revision is None
        assert all(r.file(n).stat().st_size <= releases.MAX_FILE_BYTES for n in r.files)
    not_pristine = {r.model_type for r in found if not r.pristine}
    assert not_pristine == {"exaone4", "gemma2", "gpt_bigcode"}
    assert releases.lookup("gpt2").lineage() == {
        "source": "release",
        "repo": "microsoft/DialoGPT-small",
        "revision": None,
        "pristine": True,
        "copied_from": "github:CHJCHJCH/microsoft-DialoGPT-small@49c537161a457d5256512f9d2d38a87d81ae0f0e",
    }
    assert releases.lookup("no_such_type") is None


def test_lookup_prefers_a_release_with_its_own_vocabulary_and_later_roots_lose(tmp_path, monkeypatch):
    assert releases.lookup("llama").repo == "meta-llama/Llama-2-7b-hf"  # ships tokenizer.json
    assert releases.lookup("gemma").missing == ("tokenizer.json", "tokenizer.model")
    entry = tmp_path / "llama" / "acme__tiny"
    entry.mkdir(parents=True)
    (entry / "config.json").write_text('{"model_type": "llama"}')
    (entry / "SOURCE").write_text("hf_repo_id: acme/tiny\nsource: hub\nrevision: abc\n")
    monkeypatch.setenv(releases.ENV, str(tmp_path))
    got = releases.lookup("llama")
    assert (got.repo, got.revision, got.source) == ("acme/tiny", "abc", "hub")
    assert releases.lookup("gpt2").repo == "microsoft/DialoGPT-small"  # packaged still there


# Refresh from the hub


def _hub_repo(hub: FakeHub, repo: str, model_type: str, downloads: int, tag: str) -> str:
    sha = f"{abs(hash(repo)):040d}"[:40]
    hub.add_repo(
        {
            "_id": sha[:24],
            "id": repo,
            "sha": sha,
            "downloads": downloads,
            "createdAt": "2026-01-01T00:00:00.000Z",
            "tags": ["transformers", tag],
            "config": {"model_type": model_type},
        },
        {
            "config.json": json.dumps({"model_type": model_type, "hidden_size": 64}),
            "tokenizer_config.json": '{"bos_token": "<s>"}',
            "tokenizer.json": "x" * 5000,
            "model.safetensors": "weights",
            "original/params.json": "{}",
        },
    )
    return sha


def test_refresh_takes_the_most_downloaded_repo_stating_the_type(tmp_path, monkeypatch):
    from matrix.releases import refresh

    with FakeHub(faults=False) as hub:
        _hub_repo(hub, "fans/llama-finetune", "mistral", 10_000, "llama")  # tag, not config
        sha = _hub_repo(hub, "acme/llama-base", "llama", 900, "llama")
        _hub_repo(hub, "acme/llama-small", "llama", 80, "llama")
        rows = refresh(
            tmp_path,
            ["llama", "nope_type"],
            endpoint=hub.url,
            token=False,
            max_file_bytes=1000,
            say=lambda _m: None,
        )
        fetched = [p for m, p, _s in hub.requests if m == "GET" and "/resolve/" in p]
    assert rows[0].repo == "acme/llama-base" and rows[0].revision == sha
    assert rows[0].files == ("config.json", "tokenizer_config.json")
    assert rows[0].skipped and rows[0].skipped[0].startswith("tokenizer.json (over 1000")
    assert rows[1].error and "nope_type" in rows[1].error
    assert not [
        p for p in fetched if "safetensors" in p or "params.json" in p or "tokenizer.json" in p
    ]  # never weights, never a file over the limit
    monkeypatch.setenv(releases.ENV, str(tmp_path))
    got = releases.lookup("llama")
    assert (got.repo, got.revision, got.source) == ("acme/llama-base", sha, "hub")
    assert got.missing == ("tokenizer.json",) and got.lineage()["revision"] == sha


def test_cli_lists_and_refreshes(tmp_path):
    home = {"DAYONE_HOME": str(tmp_path)}
    cli = [sys.executable, "-m", "service.cli", "releases"]
    rows = json.loads(run_in_tree([*cli, "list", "--json"], 120, home).stdout)
    assert sum(r["used"] for r in rows) == 33
    with FakeHub(faults=False) as hub:
        _hub_repo(hub, "acme/qwen3-tiny", "qwen3", 5, "qwen3")
        answer = json_answer([*cli, "refresh", "--types", "qwen3", "--endpoint", hub.url], 300, home)
    assert answer["refreshed"] == 1
    assert (tmp_path / "releases" / "qwen3" / "acme__qwen3-tiny" / "SOURCE").is_file()


def test_a_text_type_starts_from_its_multimodal_release_text_config():
    """Gemma 4 and Qwen 3.5 ship only multimodal configs: their text types are copies of the
    release's text_config, said so in the lineage."""
    for text_type, release_type in (("gemma4_text", "gemma4"), ("qwen3_5_text", "qwen3_5")):
        release = releases.lookup(text_type)
        assert release is not None and release.text_part, text_type
        assert release.model_type == release_type
        whole = json.loads(release.file("config.json").read_text())
        assert release.config()["model_type"] == text_type
        assert release.config()["hidden_size"] == whole["text_config"]["hidden_size"]
        assert release.lineage()["part"] == "text_config"
        assert not releases.lookup(release_type).text_part
    assert releases.lookup("dayone_zorblax") is None
    # Fuyu's text_config is only {"model_type": "persimmon"}: nothing of a release to copy
    assert "persimmon" in json.dumps(releases.lookup("fuyu").config()["text_config"])
    assert releases.lookup("persimmon") is None


# Real: shrink from releases


@pytest.fixture(scope="module")
def from_releases(tf_env, tmp_path_factory) -> dict:
    """Every catalogued type transformers knows, shrunk from its release and generating."""
    out = tmp_path_factory.mktemp("from-releases")
    types = releases.model_types()
    swept = json_answer(
        [
            tf_env.python,
            "-c",
            textwrap.dedent(f"""
        import json
        from probes.shrink import sweep
        print(json.dumps(sweep({str(out)!r}, {types!r} + ["olmo2"])))
    """),
        ],
        timeout=900,
    )
    rows = {r["model_type"]: r for r in swept}
    return {"out": out, "rows": rows}


REMOTE_CODE = {"chatglm", "kimi_k2", "mimo", "qwen"}  # not transformers' own model types


def _head_dim(d: dict) -> int:
    heads = d.get("num_attention_heads") or d.get("n_head")
    width = d.get("hidden_size") or d.get("n_embd") or d.get("n_embed")
    return d.get("head_dim") or width // heads


def _ratio(d: dict) -> float:
    heads = d.get("num_attention_heads") or d.get("n_head")
    return heads / (d.get("num_key_value_heads") or d.get("num_kv_heads") or heads)


def test_catalogued_types_build_from_their_release_and_generate(from_releases):
    rows = from_releases["rows"]
    for model_type in releases.model_types():
        row = rows[model_type]
        if model_type in REMOTE_CODE:
            assert row["status"] == "error" and "does not know model_type" in row["why"]
            continue
        assert row["status"] == "ok", (model_type, row.get("why"))
        assert len(row["tokens"]) == 4
        assert row["lineage"]["source"] == "release"
    assert rows["olmo2"]["status"] == "ok" and rows["olmo2"]["lineage"] == {"source": "synthetic"}
    meta = json.loads((from_releases["out"] / "olmo2" / "dayone.json").read_text())
    assert meta["lineage"] == {"source": "synthetic"}


def test_copies_keep_what_the_release_states(from_releases):
    rules = load_rules()
    for model_type in sorted(set(releases.model_types()) - REMOTE_CODE):
        release = releases.lookup(model_type)
        theirs = json.loads(release.file("config.json").read_text())
        out = from_releases["out"] / model_type
        ours = json.loads((out / "config.json").read_text())
        meta = json.loads((out / "dayone.json").read_text())
        assert meta["lineage"]["repo"] == release.repo
        assert meta["lineage"]["pristine"] is release.pristine
        assert ours["architectures"] == theirs["architectures"], model_type
        fam = rules.family(model_type)
        allowed = set(fam.get("set", {})) | {k.split(".")[0] for k in fam.get("before", {})}
        assert set(ours) - set(theirs) <= allowed, (model_type, set(ours) - set(theirs))
        assert set(theirs) - set(ours) <= {"quantization_config"}, model_type
        for key in ("torch_dtype", "dtype"):
            assert ours.get(key) == theirs.get(key), (model_type, key)
        text_theirs, text_ours = theirs.get("text_config", theirs), ours.get("text_config", ours)
        if "kv_lora_rank" in text_theirs:  # latent attention: its head sizes are stated apart
            for key in ("kv_lora_rank", "qk_rope_head_dim", "qk_nope_head_dim", "v_head_dim"):
                assert text_ours.get(key) == text_theirs.get(key), (model_type, key)
            assert text_ours["hidden_size"] % 32 == 0, model_type  # as every release's width
        elif (text_theirs.get("num_attention_heads") or text_theirs.get("n_head")) and (
            text_theirs.get("hidden_size") or text_theirs.get("n_embd") or text_theirs.get("n_embed")
        ):
            assert _head_dim(text_ours) == _head_dim(text_theirs), model_type
            if not any("ratio capped" in n for n in meta["notes"]):
                assert _ratio(text_ours) == _ratio(text_theirs), model_type
    gpt2 = json.loads((from_releases["out"] / "gpt2" / "config.json").read_text())
    assert ("n_ctx" in gpt2) == (
        "n_ctx" in json.loads(releases.lookup("gpt2").file("config.json").read_text())
    )
    bloom = json.loads((from_releases["out"] / "bloom" / "config.json").read_text())
    assert bloom["n_embed"] // bloom["num_attention_heads"] == 128  # not the default's 8


LAYOUT_CHECK = textwrap.dedent("""
    import json, struct, sys
    from pathlib import Path
    import torch, transformers
    out, types = Path(sys.argv[1]), sys.argv[2].split(",")
    rows = {}
    for t in types:
        d = out / t
        arch = json.loads((d / "config.json").read_text())["architectures"][0]
        cls = getattr(transformers, arch, None)
        if cls is None:
            continue
        with (d / "model.safetensors").open("rb") as f:
            saved = set(json.loads(f.read(struct.unpack("<Q", f.read(8))[0]))) - {"__metadata__"}
        with torch.device("meta"):
            model = cls._from_config(transformers.AutoConfig.from_pretrained(d))
        # where each part sits; a tied lm_head is not saved, so the head is left out
        top = lambda names: sorted({".".join(n.split(".")[:2]) for n in names} - {"lm_head.weight"})
        rows[t] = [top(saved), top(model.state_dict())]
    print(json.dumps(rows))
""")


def test_copies_save_the_layout_of_the_release_class(from_releases, tf_env):
    """A copy's weights sit where its release's class keeps them: Qwen 3.5 releases name
    Qwen3_5ForConditionalGeneration, whose text model is under model.language_model; a copy
    saved by the text model alone (model.layers) is one no engine ever sees."""
    types = sorted(set(releases.model_types()) - REMOTE_CODE)
    rows = json_answer(
        [tf_env.python, "-c", LAYOUT_CHECK, str(from_releases["out"]), ",".join(types)], timeout=600
    )
    assert "qwen3_5" in rows and "model.language_model" in rows["qwen3_5"][0]
    # Gemma 3 releases keep the tower under vision_tower.vision_model. (SGLang's loader reads it)
    assert "vision_tower.vision_model" in rows["gemma3"][0]
    wrong = {t: r for t, r in rows.items() if r[0] != r[1] and t not in LEGACY_LAYOUTS}
    assert not wrong, wrong


def test_named_token_ids_point_at_special_tokens(from_releases):
    """A media or other named token id (image_token_id, boi_token_id ...) of a copy with the
    fixtures' tokenizer is a special token of it, never an ordinary piece a prompt produces
    (Gemma 4's image id once fell on a piece of "The capital of France is")."""
    checked = 0
    for model_type in sorted(set(releases.model_types()) - REMOTE_CODE):
        out = from_releases["out"] / model_type
        if json.loads((out / "dayone.json").read_text())["tokenizer"] != "fixture":
            continue
        tokenizer = json.loads((out / "tokenizer.json").read_text())
        special = {t["id"] for t in tokenizer["added_tokens"] if t.get("special")}
        config = json.loads((out / "config.json").read_text())
        for scope in (config, config.get("text_config") or {}):
            for key, value in scope.items():
                if key.endswith(("_token_id", "_token_index")) and key != "pad_token_id":
                    for v in value if isinstance(value, list) else [value]:
                        if isinstance(v, int):
                            assert v in special, (model_type, key, v)
                            checked += 1
    assert checked > 10


# Releases of these families were saved before transformers moved their submodules under
# `model.` (language_model.model.*, vision_tower.*): transformers still saves them so.
LEGACY_LAYOUTS = frozenset({"fuyu", "gemma3", "mllama"})


def test_tokenizers_are_of_the_release_kind(from_releases, tf_env):
    """Gemma releases ship a SentencePiece tokenizer.model: their copies' tokenizer is
    SentencePiece-style, with the release's special tokens and chat template."""
    out = from_releases["out"]
    gemma = json.loads((out / "gemma" / "tokenizer.json").read_text())
    assert gemma["model"]["byte_fallback"] is True
    tok_config = json.loads((out / "gemma" / "tokenizer_config.json").read_text())
    assert (tok_config["bos_token"], tok_config["eos_token"]) == ("<bos>", "<eos>")
    assert "<start_of_turn>" in tok_config["chat_template"]
    assert "<start_of_turn>" in {v["content"] for v in gemma["added_tokens"] if v["special"]}
    # a base release has no chat template, so its copy has none either
    assert "chat_template" not in json.loads((out / "bloom" / "tokenizer_config.json").read_text())
    # a release with its own vocabulary keeps it, byte for byte
    qwen3 = releases.lookup("qwen3")
    assert (out / "qwen3" / "vocab.json").read_bytes() == qwen3.file("vocab.json").read_bytes()


# Families whose llama.cpp converter reads only a SentencePiece tokenizer.model (the releases'
# LFS-sized one is not catalogued, so the copy's is written from its tokenizer.json).
SENTENCEPIECE_ONLY = ("gemma", "gemma2", "phi3")

SPM_CHECK = textwrap.dedent("""
    import json, os, subprocess, sys
    import sentencepiece, llama_cpp
    from tokenizers import Tokenizer
    from probes.fixtures import CORPUS
    from probes.workload import PROMPTS
    out, types, convert = sys.argv[1], sys.argv[2].split(","), sys.argv[3].split(",")
    converter = os.path.join(os.path.dirname(os.path.dirname(sys.executable)), "llama.cpp-convert")
    texts = (*CORPUS, *PROMPTS)
    rows = {}
    for t in types:
        d = os.path.join(out, t)
        sp = sentencepiece.SentencePieceProcessor()
        sp.LoadFromFile(os.path.join(d, "tokenizer.model"))
        hf = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
        want = [hf.encode(x, add_special_tokens=False).ids for x in texts]
        row = {"spm": sum(sp.EncodeAsIds(x) != w for x, w in zip(texts, want))}
        if t in convert:
            gguf = os.path.join(out, t + ".gguf")
            proc = subprocess.run([sys.executable, "-m", "probes.gguf_convert", "--converter",
                                   converter, "--", d, "--outfile", gguf, "--outtype", "f32"],
                                  capture_output=True, text=True)
            row["convert"] = proc.returncode
            if proc.returncode == 0:
                llm = llama_cpp.Llama(gguf, vocab_only=True, verbose=False)
                row["llamacpp"] = sum(llm.tokenize(x.encode(), add_bos=False, special=True) != w
                                      for x, w in zip(texts, want))
        rows[t] = row
    print(json.dumps(rows))
""")


@pytest.mark.slow
def test_sentencepiece_copies_carry_a_tokenizer_model_read_as_their_tokenizer_json(from_releases):
    """Where the release ships a tokenizer.model, the copy carries one: the real sentencepiece
    library and llama.cpp (whose converter for Gemma, Gemma 2 and Phi-3 reads nothing else)
    tokenize the fixtures' corpus and the workload as the copy's tokenizer.json does."""
    from matrix.environments import ensure_env

    out = from_releases["out"]
    with_model = sorted(
        t for t in set(releases.model_types()) - REMOTE_CODE if (out / t / "tokenizer.model").exists()
    )
    assert set(SENTENCEPIECE_ONLY) <= set(with_model), with_model
    for t in with_model:  # each one's release ships a tokenizer.model
        release = releases.lookup(t)
        assert "tokenizer.model" in (*release.files, *release.missing), t
    gemma2 = json.loads((out / "gemma2" / "tokenizer.json").read_text())
    assert "\n" not in {v["content"] for v in gemma2["added_tokens"]}  # an ordinary piece
    env = ensure_env("llamacpp", say=lambda m: print(m, file=sys.stderr))
    rows = json_answer(
        [env.python, "-c", SPM_CHECK, str(out), ",".join(with_model), ",".join(SENTENCEPIECE_ONLY)],
        timeout=900,
    )
    for t, row in rows.items():
        assert row["spm"] == 0, (t, row)
    for t in SENTENCEPIECE_ONLY:
        assert rows[t]["convert"] == 0 and rows[t]["llamacpp"] == 0, (t, rows[t])
