"""Discovery against a local fake hub serving recorded API answers over HTTP.

huggingface_hub itself talks to the fake: pagination, a 429, a 500, a gated repo, a repo with
no config.json are all real HTTP answers, nothing in the client is mocked.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from matrix.discover import Discovery, RetryPolicy, Watchlist, change_kind, discover, load_watchlist, new_work
from tests.fakehub import GOOD_TOKEN, Fault, FakeHub

FAST = RetryPolicy(attempts=4, base_wait_s=0.01, max_wait_s=0.05)
ORGS = ("google", "Qwen", "nvidia")


@pytest.fixture()
def hub():
    with FakeHub() as running:
        yield running


def run(hub: FakeHub, tmp_path: Path, watch: Watchlist, token: str | bool = False) -> Discovery:
    return discover(watch, endpoint=hub.url, token=token, cache_dir=tmp_path / "hf", retry=FAST)


def by_id(found: Discovery) -> dict:
    return {m.id: m for m in found.models}


def test_finds_every_repo_of_the_watched_orgs_newest_first(hub, tmp_path):
    found = run(hub, tmp_path, Watchlist(orgs=ORGS))
    assert found.errors == []
    google = [m.id for m in found.models if m.org == "google"]
    assert google == ["google/gemma-4-E2B-it", "google/gemma-3-1b-it", "google/gemma-docs-assets"]
    models = by_id(found)
    assert len(models) == 6
    gemma3 = models["google/gemma-3-1b-it"]
    assert gemma3.revision == hub.repos["google/gemma-3-1b-it"].sha
    assert gemma3.created_at == "2025-03-10T07:40:00Z"
    assert (gemma3.model_type, gemma3.architecture) == ("gemma3_text", "Gemma3ForCausalLM")
    assert gemma3.params == 999885952 and gemma3.size_bytes == 2 * 999885952
    # the config the arch tier shrinks is the recorded one, fetched at that sha
    fetched = Path(gemma3.model_dir) / "config.json"
    recorded = hub.repos["google/gemma-3-1b-it"].files["config.json"]
    assert fetched.read_bytes() == recorded
    assert (Path(gemma3.model_dir) / "generation_config.json").exists()
    # google's listing took two pages (page size 2) after one rate-limited try
    listing = [(p, s) for m, p, s in hub.requests if p.startswith("/api/models?author=google")]
    assert [s for _p, s in listing] == [429, 200, 200]
    assert "cursor=2" in listing[-1][0]


def test_gated_and_configless_repos_are_reported_not_dropped(hub, tmp_path):
    models = by_id(run(hub, tmp_path, Watchlist(orgs=("google",))))
    gated = models["google/gemma-4-E2B-it"]
    assert gated.gated and gated.skip_reason == "gated: no access with this token"
    assert gated.model_dir is None and gated.model_type == "gemma4_text"
    assets = models["google/gemma-docs-assets"]
    assert assets.skip_reason == "no config.json in the repo"
    # with a token that has access, the gated repo is fetched like any other
    models = by_id(run(hub, tmp_path / "t", Watchlist(orgs=("google",)), token=GOOD_TOKEN))
    gated = models["google/gemma-4-E2B-it"]
    assert gated.gated and gated.skip_reason is None
    assert json.loads((Path(gated.model_dir) / "config.json").read_text())["model_type"] == "gemma4_text"


def test_server_error_once_is_retried(hub, tmp_path):
    models = by_id(run(hub, tmp_path, Watchlist(orgs=("nvidia",))))
    nemotron = models["nvidia/Nemotron-H-4B-Base-8K"]
    assert nemotron.skip_reason is None and nemotron.model_type == "nemotron_h"
    gets = [s for m, p, s in hub.requests if m == "GET" and "Nemotron-H" in p and "/resolve/" in p]
    assert gets == [500, 200]


def test_persistent_errors_end_as_reasons_not_crashes(hub, tmp_path):
    # (a persistent 5xx on a listing is retried by huggingface_hub's own backoff for ~25 s
    # per try before ours gives up: too slow for a test; an auth error is not retried at all)
    hub.add_fault(
        Fault(
            path_prefix="/api/models",
            query_contains="author=Qwen",
            status=401,
            times=100,
            headers={"X-Error-Code": "RepoNotFound"},
        )
    )
    hub.add_fault(Fault(path_prefix="/nvidia/", method="GET", status=500, times=100))
    found = run(hub, tmp_path, Watchlist(orgs=("Qwen", "nvidia"), models=("acme/missing",)))
    assert any(e.startswith("org Qwen:") for e in found.errors)
    assert "model acme/missing: not found on the hub" in found.errors
    nemotron = by_id(found)["nvidia/Nemotron-H-4B-Base-8K"]
    assert nemotron.skip_reason == "hub error 500 fetching files"


def test_limit_and_since_stop_paging_early(hub, tmp_path):
    found = run(hub, tmp_path, Watchlist(orgs=("google",), per_org_limit=1))
    assert [m.id for m in found.models] == ["google/gemma-4-E2B-it"]
    assert not any("cursor=" in p for _m, p, _s in hub.requests)

    import datetime as dt

    found = run(hub, tmp_path, Watchlist(orgs=("google", "Qwen"), since=dt.date(2026, 1, 1)))
    assert [m.id for m in found.models] == ["google/gemma-4-E2B-it", "Qwen/Qwen3.5-35B-A3B-Text"]


def test_second_night_finds_no_new_work_until_a_new_commit(hub, tmp_path):
    watch = Watchlist(orgs=ORGS, models=("Qwen/Qwen3-0.6B",))
    first = run(hub, tmp_path, watch)
    assert len(new_work(first.models, [])) == 6  # the watched single repo is not doubled
    known = [m.key for m in first.models]
    second = run(hub, tmp_path, watch)
    assert new_work(second.models, known) == []

    sha = hub.push_commit(
        "Qwen/Qwen3-0.6B",
        {
            "config.json": json.dumps(
                {**json.loads(hub.repos["Qwen/Qwen3-0.6B"].files["config.json"]), "rope_theta": 5e6}
            )
        },
    )
    third = run(hub, tmp_path, watch)
    work = new_work(third.models, known)
    assert [(m.id, m.revision) for m in work] == [("Qwen/Qwen3-0.6B", sha)]
    assert json.loads((Path(work[0].model_dir) / "config.json").read_text())["rope_theta"] == 5e6
    known_map: dict[str, set[str]] = {}
    for mid, rev in known:
        known_map.setdefault(mid, set()).add(rev)
    assert change_kind(work[0], known_map) == "changed"
    assert change_kind(third.models[0], known_map) == "unchanged"


def test_watchlist_files_and_local_directories(hub, tmp_path):
    local = tmp_path / "models" / "my-model"
    local.mkdir(parents=True)
    shutil.copy(
        Path(__file__).parent / "fakehub/recordings/files/Qwen/Qwen3-0.6B/config.json", local / "config.json"
    )
    (tmp_path / "empty").mkdir()
    (tmp_path / "watch.toml").write_text(
        'orgs = ["nvidia"]\nmodels = ["Qwen/Qwen3-0.6B"]\nlocal = ["models/my-model", "empty"]\n'
        "per_org_limit = 5\nsince = 2025-01-01\n"
    )
    (tmp_path / "watch.yaml").write_text(
        "orgs: [nvidia]\nmodels: [Qwen/Qwen3-0.6B]\nlocal: [models/my-model, empty]\n"
        "per_org_limit: 5\nsince: 2025-01-01\n"
    )
    toml, yaml = load_watchlist(tmp_path / "watch.toml"), load_watchlist(tmp_path / "watch.yaml")
    assert toml == yaml and toml.local[0] == str(local.resolve())

    found = run(hub, tmp_path, toml)
    models = by_id(found)
    assert set(models) >= {"nvidia/Nemotron-H-4B-Base-8K", "Qwen/Qwen3-0.6B", "my-model"}
    mine = models["my-model"]
    assert mine.source == "local" and mine.model_type == "qwen3" and mine.revision
    assert [m.skip_reason for m in found.models if m.id.endswith("empty")] == [
        "no config.json in the directory"
    ]
    # editing the local directory is a new revision
    (local / "config.json").write_text((local / "config.json").read_text().replace("1024", "1025"))
    again = by_id(run(hub, tmp_path, toml))["my-model"]
    assert again.revision != mine.revision
    assert new_work([again], [mine.key]) == [again]

    with pytest.raises(ValueError, match="unknown watchlist keys"):
        (tmp_path / "bad.toml").write_text('orgz = ["x"]\n')
        load_watchlist(tmp_path / "bad.toml")
