"""Discovery: new and changed models from watched hub organisations and a watchlist file.

The hub side uses `huggingface_hub.HfApi(endpoint=...)`: `list_models(author=ORG)` newest first
(with sha, dates, gated flag, size, file list), then config.json and tokenizer files fetched into
a local cache (the arch tier needs nothing else). Transient hub errors (429, 5xx, connection
drops) are retried with tenacity on top of huggingface_hub's own backoff. A gated repo we cannot
read, or one without config.json, is still reported (with `skip_reason`), never dropped.

`new_work` is the pure decision: a (model, revision) not seen before is new work; an unchanged
sha is not.
"""

from __future__ import annotations

import datetime as dt
import tomllib
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# Files of a release the arch tier reads; fetched when the repo lists them.
FETCH_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer_config.json",
    "tokenizer.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "tokenizer.model",
)
LIST_EXPAND = [
    "sha",
    "createdAt",
    "lastModified",
    "gated",
    "private",
    "safetensors",
    "usedStorage",
    "config",
    "siblings",
    "pipeline_tag",
    "library_name",
    "tags",
]
TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class DiscoveredModel:
    """One model at one revision, as discovery found it."""

    id: str  # hub repo id, or the local directory's model id
    revision: str | None  # commit sha (hub) or content fingerprint (local)
    source: str  # "hub" or "local"
    created_at: str | None = None
    last_modified: str | None = None
    gated: bool = False
    model_type: str | None = None
    architecture: str | None = None
    params: int | None = None
    size_bytes: int | None = None
    model_dir: str | None = None  # a local directory holding config.json (+ tokenizer files)
    skip_reason: str | None = None  # why it cannot be probed (gated without access, no config)
    org: str | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.id, self.revision or "")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Watchlist:
    orgs: tuple[str, ...] = ()
    models: tuple[str, ...] = ()  # hub ids watched one by one
    local: tuple[str, ...] = ()  # local HF-format directories
    per_org_limit: int = 50
    since: dt.date | None = None  # ignore models created before this day
    endpoint: str | None = None


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5
    base_wait_s: float = 1.0
    max_wait_s: float = 30.0


@dataclass
class Discovery:
    models: list[DiscoveredModel] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # an org or model we could not read at all


# Pure decisions


def new_work(
    discovered: Iterable[DiscoveredModel],
    known_revisions: Mapping[str, Collection[str]] | Iterable[tuple[str, str]],
) -> list[DiscoveredModel]:
    """The models whose (id, revision) is not known yet: a new sha is new work, an unchanged
    one is not. Skipped models (gated, no config) count too: they get a `skipped` record once
    per revision. Order is kept; duplicates (same id and revision) are dropped."""
    if isinstance(known_revisions, Mapping):
        known = {(mid, rev) for mid, revs in known_revisions.items() for rev in revs}
    else:
        known = {(mid, rev or "") for mid, rev in known_revisions}
    out: list[DiscoveredModel] = []
    seen: set[tuple[str, str]] = set()
    for model in discovered:
        if model.key in known or model.key in seen:
            continue
        seen.add(model.key)
        out.append(model)
    return out


def change_kind(model: DiscoveredModel, known_revisions: Mapping[str, Collection[str]]) -> str:
    """`new` (never seen), `changed` (seen at other revisions) or `unchanged`."""
    revs = known_revisions.get(model.id)
    if not revs:
        return "new"
    return "unchanged" if (model.revision or "") in revs else "changed"


def parse_day(value: Any) -> dt.date | None:
    if value is None or value == "":
        return None
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(str(value)[:10])


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        return value.astimezone(dt.timezone.utc).isoformat().replace("+00:00", "Z")
    return str(value)


# Watchlist file (TOML, or YAML when PyYAML is installed)


def load_watchlist(path: str | Path) -> Watchlist:
    """Read a watchlist:

    orgs = ["google", "Qwen"]          # watched hub organisations
    models = ["openai/gpt-oss-20b"]    # single hub repos
    local = ["/models/my-model"]       # local HF directories (relative to the file)
    per_org_limit = 50
    since = 2026-01-01
    endpoint = "https://huggingface.co"
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if path.suffix in (".yaml", ".yml"):
        import yaml

        data = yaml.safe_load(text) or {}
    else:
        data = tomllib.loads(text)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a watchlist is a table of orgs / models / local")
    unknown = set(data) - {"orgs", "models", "local", "per_org_limit", "since", "endpoint"}
    if unknown:
        raise ValueError(f"{path}: unknown watchlist keys {sorted(unknown)}")
    local = [str((path.parent / p).resolve()) for p in data.get("local", [])]
    return Watchlist(
        orgs=tuple(data.get("orgs", [])),
        models=tuple(data.get("models", [])),
        local=tuple(local),
        per_org_limit=int(data.get("per_org_limit", 50)),
        since=parse_day(data.get("since")),
        endpoint=data.get("endpoint"),
    )


# The hub (thin I/O shell over huggingface_hub)


def is_transient(exc: BaseException) -> bool:
    """Worth retrying: rate limits, server errors, dropped connections."""
    from huggingface_hub.errors import HfHubHTTPError

    if isinstance(exc, HfHubHTTPError):
        status = getattr(getattr(exc, "response", None), "status_code", None)
        return status in TRANSIENT_STATUS
    name = type(exc).__name__
    return name in {
        "ConnectError",
        "ReadTimeout",
        "ConnectTimeout",
        "RemoteProtocolError",
        "ReadError",
        "TimeoutException",
        "ConnectionError",
    }


def _retrying(policy: RetryPolicy) -> Any:
    import tenacity

    return tenacity.Retrying(
        retry=tenacity.retry_if_exception(is_transient),
        stop=tenacity.stop_after_attempt(policy.attempts),
        wait=tenacity.wait_exponential(multiplier=policy.base_wait_s, max=policy.max_wait_s),
        reraise=True,
    )


class HubClient:
    """What discovery needs from the hub: list an org, read one repo, fetch a few files."""

    def __init__(
        self,
        endpoint: str | None = None,
        token: str | bool | None = None,
        cache_dir: str | Path | None = None,
        retry: RetryPolicy = RetryPolicy(),
    ):
        from huggingface_hub import HfApi

        self.api = HfApi(endpoint=endpoint, token=token)
        self.endpoint = endpoint
        self.token = token
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.retry = retry

    def call(self, fn: Callable[[], Any]) -> Any:
        return _retrying(self.retry)(fn)

    def list_org(self, org: str, limit: int, since: dt.date | None) -> list[Any]:
        """Newest first; stops at `limit` or at the first model older than `since`, so old
        pages are never fetched."""

        def fetch() -> list[Any]:
            found = []
            for info in self.api.list_models(author=org, sort="createdAt", expand=LIST_EXPAND):
                created = parse_day(getattr(info, "created_at", None))
                if since and created and created < since:
                    break
                found.append(info)
                if len(found) >= limit:
                    break
            return found

        return self.call(fetch)

    def model_info(self, repo_id: str) -> Any:
        return self.call(lambda: self.api.model_info(repo_id, expand=LIST_EXPAND))

    def fetch_files(self, repo_id: str, sha: str, names: Iterable[str]) -> Path:
        """Download the named files at `sha`; returns the snapshot directory holding them."""
        from huggingface_hub import hf_hub_download

        folder: Path | None = None
        for name in names:
            path = self.call(
                lambda name=name: hf_hub_download(
                    repo_id,
                    name,
                    revision=sha,
                    cache_dir=self.cache_dir,
                    endpoint=self.endpoint,
                    token=self.token,
                )
            )
            folder = Path(path).parent
        if folder is None:
            raise FileNotFoundError(f"{repo_id}: nothing to fetch")
        return folder


def from_hub_info(info: Any, org: str | None, client: HubClient) -> DiscoveredModel:
    """One hub repo -> DiscoveredModel, fetching its config (and tokenizer files)."""
    from huggingface_hub.errors import EntryNotFoundError, GatedRepoError, HfHubHTTPError

    config = info.config if isinstance(getattr(info, "config", None), dict) else {}
    archs = config.get("architectures") or []
    safetensors = getattr(info, "safetensors", None)
    siblings = {s.rfilename for s in (getattr(info, "siblings", None) or [])}
    base = dict(
        id=info.id,
        revision=info.sha,
        source="hub",
        org=org or info.id.split("/")[0],
        created_at=_iso(getattr(info, "created_at", None)),
        last_modified=_iso(getattr(info, "last_modified", None)),
        gated=bool(getattr(info, "gated", False)),
        model_type=config.get("model_type"),
        architecture=archs[0] if archs else None,
        params=getattr(safetensors, "total", None) if safetensors else None,
        size_bytes=getattr(info, "used_storage", None),
    )
    if siblings and "config.json" not in siblings:
        return DiscoveredModel(**base, skip_reason="no config.json in the repo")
    names = [n for n in FETCH_FILES if n in siblings] or ["config.json"]
    try:
        folder = client.fetch_files(info.id, info.sha, names)
    except GatedRepoError:
        return DiscoveredModel(**base, skip_reason="gated: no access with this token")
    except EntryNotFoundError:
        return DiscoveredModel(**base, skip_reason="no config.json in the repo")
    except HfHubHTTPError as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        return DiscoveredModel(**base, skip_reason=f"hub error {status} fetching files")
    return DiscoveredModel(**base, model_dir=str(folder))


def discover_hub(
    orgs: Iterable[str],
    models: Iterable[str],
    client: HubClient,
    *,
    per_org_limit: int = 50,
    since: dt.date | None = None,
    progress: Callable[[str], None] | None = None,
) -> Discovery:
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

    out = Discovery()
    seen: set[str] = set()
    for org in orgs:
        try:
            infos = client.list_org(org, per_org_limit, since)
        except HfHubHTTPError as exc:
            out.errors.append(f"org {org}: {exc}".splitlines()[0])
            continue
        for info in infos:
            if info.id not in seen:
                seen.add(info.id)
                out.models.append(from_hub_info(info, org, client))
                if progress:
                    progress(info.id)
    for repo_id in models:
        if repo_id in seen:
            continue
        seen.add(repo_id)
        try:
            info = client.model_info(repo_id)
        except RepositoryNotFoundError:
            out.errors.append(f"model {repo_id}: not found on the hub")
            continue
        except HfHubHTTPError as exc:
            out.errors.append(f"model {repo_id}: {exc}".splitlines()[0])
            continue
        out.models.append(from_hub_info(info, None, client))
        if progress:
            progress(repo_id)
    return out


# Local directories


def discover_local(paths: Iterable[str | Path]) -> Discovery:
    from probes.modelinfo import read_model_info

    out = Discovery()
    for raw in paths:
        path = Path(raw)
        if not (path / "config.json").is_file():
            out.models.append(
                DiscoveredModel(
                    id=str(path), revision=None, source="local", skip_reason="no config.json in the directory"
                )
            )
            continue
        info = read_model_info(path)
        out.models.append(
            DiscoveredModel(
                id=info.id,
                revision=info.revision,
                source="local",
                model_type=info.model_type,
                architecture=info.architecture,
                created_at=info.release_date,
                model_dir=str(path.resolve()),
            )
        )
    return out


def discover(
    watchlist: Watchlist,
    *,
    endpoint: str | None = None,
    token: str | bool | None = None,
    cache_dir: str | Path | None = None,
    retry: RetryPolicy = RetryPolicy(),
    progress: Callable[[str], None] | None = None,
) -> Discovery:
    """Everything the watchlist names: hub orgs and repos, then local directories."""
    out = Discovery()
    if watchlist.orgs or watchlist.models:
        client = HubClient(
            endpoint=endpoint or watchlist.endpoint, token=token, cache_dir=cache_dir, retry=retry
        )
        hub = discover_hub(
            watchlist.orgs,
            watchlist.models,
            client,
            per_org_limit=watchlist.per_org_limit,
            since=watchlist.since,
            progress=progress,
        )
        out.models += hub.models
        out.errors += hub.errors
    local = discover_local(watchlist.local)
    out.models += local.models
    out.errors += local.errors
    return out


def iter_keys(models: Iterable[DiscoveredModel]) -> Iterator[tuple[str, str]]:
    for m in models:
        yield m.key
