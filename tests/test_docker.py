"""The docker executor against a real Docker daemon and the real transformers engine.

No daemon is a failure with the reason, not a skip: set DAYONE_ALLOW_NO_DOCKER=1 to skip these
tests where Docker truly cannot run (the local executor is tested elsewhere either way).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

docker = pytest.importorskip("docker")

from matrix import docker_executor as dx  # noqa: E402
from matrix.environments import ensure_env  # noqa: E402
from probes.engines import ENGINES  # noqa: E402
from probes.record import build_records  # noqa: E402
from probes.runner import ProbeRequest, run_probe  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
ENGINE = "transformers"
VERSION = "5.23.0"
STAGES = ["load", "generate"]
FIXTURES = ["llama", "broken-unknown-arch", "broken-truncated-weights"]
# The engines' images against their venvs: one healthy fixture in CI; the nightly workflow's
# container job sets DAYONE_IDENTITY_FIXTURES=all (every fixture family and broken fixture).
ALL_FIXTURES = [
    "llama",
    "qwen3",
    "mistral",
    "phi3",
    "gemma3_text",
    "qwen3_moe",
    "mixtral",
    "broken-unknown-arch",
    "broken-truncated-weights",
    "broken-missing-weights",
    "broken-unreadable-config",
]
_asked = os.environ.get("DAYONE_IDENTITY_FIXTURES", "llama")
IDENTITY_FIXTURES = ALL_FIXTURES if _asked == "all" else [f for f in _asked.split(",") if f]


def _daemon_or_reason() -> tuple[object | None, str]:
    try:
        return dx.connect(), ""
    except dx.DockerUnavailable as first:
        reason = str(first)
    script = REPO / ".ci" / "docker-up.sh"
    if os.geteuid() == 0 and script.exists():  # idempotent: installs and starts dockerd
        proc = subprocess.run([str(script)], capture_output=True, text=True, timeout=600, check=False)
        if proc.returncode == 0:
            return dx.connect(), ""
        reason += "\n.ci/docker-up.sh failed:\n" + proc.stderr[-2000:]
    return None, reason


@pytest.fixture(scope="session")
def client():
    found, reason = _daemon_or_reason()
    if found is None:
        if os.environ.get("DAYONE_ALLOW_NO_DOCKER") == "1":
            pytest.skip(f"DOCKER UNAVAILABLE (allowed by DAYONE_ALLOW_NO_DOCKER=1): {reason}")
        pytest.fail(
            f"Docker is required for these tests and could not start: {reason}\n"
            "(set DAYONE_ALLOW_NO_DOCKER=1 only where Docker truly cannot run)",
            pytrace=False,
        )
    return found


@pytest.fixture(scope="session")
def image(client):
    return dx.ensure_image(ENGINE, client=client, say=lambda _m: None)


@pytest.fixture(scope="session")
def local_env():
    return ensure_env(ENGINE, say=lambda _m: None)


@pytest.fixture(scope="session")
def models(tmp_path_factory, local_env) -> Path:
    """The lead's tiny fixtures, built in the transformers environment, readable by the probe
    user (the container runs as a non-root uid that does not own them)."""
    out = tmp_path_factory.mktemp("fixtures")
    wanted = dict.fromkeys([*FIXTURES, *IDENTITY_FIXTURES])
    subprocess.run(
        [local_env.python, "-m", "probes.fixtures", str(out), "--only", *wanted],
        check=True,
        capture_output=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    for path in [out, *out.rglob("*")]:
        path.chmod(path.stat().st_mode | (0o555 if path.is_dir() else 0o444))
    return out


def _sandboxed_containers(client) -> set[str]:
    found = client.containers.list(all=True, filters={"label": dx.LABEL_CONTAINER})
    found += [
        c
        for c in client.containers.list(all=True)
        if any(t.startswith("dayone-") for t in (c.image.tags if c.image else []))
    ]
    return {c.id for c in found}


@pytest.fixture(autouse=True)
def nothing_left_behind(request):
    """Every test here: no probe container and no volume survives it."""
    if "client" not in request.fixturenames:
        yield
        return
    client = request.getfixturevalue("client")
    before = (_sandboxed_containers(client), {v.id for v in client.volumes.list()})
    yield
    after = (_sandboxed_containers(client), {v.id for v in client.volumes.list()})
    assert after[0] <= before[0], f"containers left behind: {after[0] - before[0]}"
    assert after[1] <= before[1], f"volumes left behind: {after[1] - before[1]}"


def _request(model: Path, local_env, **kw) -> ProbeRequest:
    kw.setdefault("memory_mb", 4096)
    kw.setdefault("timeout_s", 300)
    return ProbeRequest(engine=ENGINE, model_dir=model, stages=STAGES, python=local_env.python, **kw)


def _records(outcome, model: Path, environment=None) -> list[dict]:
    return build_records(
        stages=STAGES,
        outcome=outcome,
        engine=ENGINE,
        engine_version=None,
        model={"id": model.name},
        environment=environment,
    )


def _verdicts(records: list[dict]) -> list[tuple]:
    return [(r["stage"], r["status"], r["failure_class"]) for r in records]


def _run_in_sandbox(
    client, image, model: Path, out: Path, code: str, limits: dx.Limits = dx.DEFAULT_LIMITS
) -> tuple[int, str]:
    """Python code in a container with exactly the sandbox a probe gets."""
    req = ProbeRequest(engine=ENGINE, model_dir=model, stages=STAGES)
    dx._prepare_out_dir(out)
    cfg = dx.container_config(req, image.image_id, out, limits, ["-c", code])
    cfg["entrypoint"] = ["python3"]
    run = dx.run_container(client, cfg, out / "sandbox.log", timeout_s=60)
    assert run.error is None, run.error
    return run.exit_code, (out / "sandbox.log").read_text()


# Same verdicts


@pytest.mark.parametrize("fixture", FIXTURES)
def test_same_verdicts_local_and_docker(client, image, local_env, models, tmp_path, fixture):
    model = models / fixture
    req = _request(model, local_env)
    local = _records(run_probe(req, tmp_path / "local"), model)
    boxed = _records(
        dx.run_probe(req, tmp_path / "docker", image, client=client), model, image.as_environment()
    )
    assert _verdicts(boxed) == _verdicts(local), (boxed[0]["message"], local[0]["message"])
    assert boxed[0]["engine"]["version"] == local[0]["engine"]["version"]
    assert boxed[0]["engine"]["image_digest"].startswith("sha256:")
    assert boxed[0]["engine"]["image"] == "dayone-probe-transformers:5.23.0"
    if fixture == "llama":  # healthy: both executors ran the same code on the same weights
        assert [r["status"] for r in boxed] == ["pass", "pass"]
        assert boxed[1]["output"] == local[1]["output"]
    else:
        assert boxed[0]["status"] == "fail"


# The sandbox

NETWORK_PROBE = r"""
import errno, os, socket
print("interfaces", sorted(os.listdir("/sys/class/net")))
for host, port in (("1.1.1.1", 443), ("172.17.0.1", 9)):
    s = socket.socket(); s.settimeout(3)
    try:
        s.connect((host, port)); print("connected", host)
    except OSError as e:
        print("connect", host, errno.errorcode.get(e.errno, e.errno))
try:
    socket.getaddrinfo("pypi.org", 443); print("resolved pypi.org")
except OSError as e:
    print("resolve failed", e)
"""


def test_probe_container_has_no_network(client, image, models, tmp_path):
    code, log = _run_in_sandbox(client, image, models / "llama", tmp_path / "none", NETWORK_PROBE)
    assert code == 0, log
    assert "interfaces ['lo']" in log
    assert "connect 1.1.1.1 ENETUNREACH" in log
    assert "connect 172.17.0.1 ENETUNREACH" in log
    assert "resolve failed" in log and "connected" not in log and "resolved" not in log
    # Control: the same check with a network does see one, so the check above can fail.
    code, log = _run_in_sandbox(
        client, image, models / "llama", tmp_path / "net", NETWORK_PROBE, dx.Limits(network=True)
    )
    assert "eth0" in log and "connect 172.17.0.1 ENETUNREACH" not in log, log


WRITE_PROBE = r"""
import errno
for path in ("/model/new-file", "/model/config.json", "/opt/dayone/probes/x.py", "/out/ok"):
    try:
        with open(path, "a") as fh:
            fh.write("x")
        print("wrote", path)
    except OSError as e:
        print("refused", path, errno.errorcode.get(e.errno, e.errno))
"""


def _tree_digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        h.update(str(p.relative_to(root)).encode() + (p.read_bytes() if p.is_file() else b"/"))
    return h.hexdigest()


def test_probe_cannot_write_the_model(client, image, models, tmp_path):
    # World-writable on the host, so only the read-only mount can stop the writes.
    model = tmp_path / "model"
    shutil.copytree(models / "llama", model)
    for path in [model, *model.rglob("*")]:
        path.chmod(0o777 if path.is_dir() else 0o666)
    before = _tree_digest(model)
    code, log = _run_in_sandbox(client, image, model, tmp_path / "out", WRITE_PROBE)
    assert code == 0, log
    assert "refused /model/new-file EROFS" in log
    assert "refused /model/config.json EROFS" in log
    assert "refused /opt/dayone/probes/x.py EROFS" in log  # the image is read-only too
    assert "wrote /out/ok" in log  # control: the output directory is writable
    assert (tmp_path / "out" / "ok").read_text() == "x"
    assert _tree_digest(model) == before


def test_probe_runs_as_non_root(client, image, models, tmp_path):
    code, log = _run_in_sandbox(
        client,
        image,
        models / "llama",
        tmp_path / "out",
        "import os; print('uid', os.getuid(), 'gid', os.getgid())",
    )
    assert code == 0 and "uid 0" not in log and "uid " in log, log


# Limits and deaths


def test_memory_limit_gives_oom(client, image, local_env, models, tmp_path):
    model = models / "llama"
    outcome = dx.run_probe(_request(model, local_env, memory_mb=160), tmp_path, image, client=client)
    records = _records(outcome, model)
    assert outcome.oom_kills_delta == 1 and outcome.returncode == -9, outcome.log_text[-500:]
    assert _verdicts(records) == [("load", "oom", "out_of_memory"), ("generate", "skipped", None)]


def test_killed_container_gives_a_result(client, image, local_env, models, tmp_path):
    model = models / "llama"

    def kill_soon(container):
        threading.Timer(1.5, container.kill).start()

    t0 = time.monotonic()
    outcome = dx.run_probe(_request(model, local_env), tmp_path, image, client=client, on_start=kill_soon)
    assert time.monotonic() - t0 < 60
    records = _records(outcome, model)
    assert outcome.returncode == -9 and not outcome.oom_kills_delta
    assert records[0]["status"] == "fail" and "SIGKILL" in records[0]["message"]
    assert records[1]["status"] == "skipped"


def test_timeout_gives_timeout(client, image, local_env, models, tmp_path):
    model = models / "llama"
    t0 = time.monotonic()
    outcome = dx.run_probe(_request(model, local_env, timeout_s=2), tmp_path, image, client=client)
    assert time.monotonic() - t0 < 60
    assert outcome.timed_out
    assert _records(outcome, model)[0]["status"] == "timeout"


# Our failures are `error` / `infra`, never the engine's `fail`


def test_container_that_cannot_start_is_infra(client, image, local_env, models, tmp_path):
    missing = dx.ProbeImage(**{**dx.describe(image), "image_id": "sha256:" + "0" * 64})
    outcome = dx.run_probe(_request(models / "llama", local_env), tmp_path, missing, client=client)
    records = _records(outcome, models / "llama")
    assert [(r["status"], r["failure_class"]) for r in records] == [("error", "infra")] + [("skipped", None)]


def test_a_release_that_cannot_be_locked_is_infra(client, local_env, models, tmp_path):
    with pytest.raises(dx.ImageBuildError) as info:
        dx.ensure_image(ENGINE, "0.0.0.dev0", client=client, say=lambda _m: None)
    assert "lock could not be made" in str(info.value)
    assert "transformers==0.0.0.dev0" in str(info.value)
    records = _records(dx.build_failure_outcome(info.value, tmp_path), models / "llama")
    assert records[0]["status"] == "error" and records[0]["failure_class"] == "infra"
    with pytest.raises(docker.errors.ImageNotFound):
        client.images.get(dx.image_tag(ENGINE, "0.0.0.dev0"))


def test_image_that_cannot_build_is_infra(client, local_env, models, tmp_path, monkeypatch):
    # A lock whose hash no download matches: pip inside the build refuses it, as it would a
    # tampered package.
    monkeypatch.setattr(
        dx,
        "lock_files",
        lambda _content: {
            "locked.txt": f"transformers=={VERSION} --hash=sha256:{'0' * 64}\n",
            "built.txt": "",
        },
    )
    monkeypatch.setattr(dx, "image_tag", lambda *_a: "dayone-probe-transformers:cannot-build")
    dangling = {i.id for i in client.images.list(filters={"dangling": True})}
    with pytest.raises(dx.ImageBuildError) as info:
        dx.ensure_image(ENGINE, VERSION, client=client, rebuild=True, say=lambda _m: None)
    assert "failed to build" in str(info.value)
    records = _records(dx.build_failure_outcome(info.value, tmp_path), models / "llama")
    assert records[0]["status"] == "error" and records[0]["failure_class"] == "infra"
    with pytest.raises(docker.errors.ImageNotFound):
        client.images.get("dayone-probe-transformers:cannot-build")
    assert {i.id for i in client.images.list(filters={"dangling": True})} <= dangling


def test_unreadable_model_is_infra(client, image, local_env, models, tmp_path):
    model = tmp_path / "private"
    shutil.copytree(models / "llama", model)
    (model / "model.safetensors").chmod(0o600)
    outcome = dx.run_probe(_request(model, local_env), tmp_path / "out", image, client=client)
    records = _records(outcome, model)
    assert (records[0]["status"], records[0]["failure_class"]) == ("error", "infra")
    assert "model.safetensors (mode 600" in records[0]["message"]


def test_exit_codes_read_like_the_local_runner():
    assert dx.exit_to_returncode(137) == -9
    assert dx.exit_to_returncode(139) == -11
    assert dx.exit_to_returncode(3) == 3
    assert dx.exit_to_returncode(0) == 0


@pytest.mark.parametrize("engine", sorted(n for n, s in ENGINES.items() if s.production_base))
def test_every_engine_has_both_bases_and_the_same_probe_entry(engine):
    text = dx.dockerfile(engine).read_text()
    for needed in (
        "ARG BASE_IMAGE=",
        "FROM ${BASE_IMAGE}",
        "ARG FLAVOR=",
        "cpu)",
        "production)",
        "COPY probes/ /opt/dayone/probes/",
        "USER ${PROBE_UID}",
        'ENTRYPOINT ["python3", "-m", "probes.child"]',
    ):
        assert needed in text, f"{engine}.Dockerfile lacks {needed!r}"
    assert "USER root" not in text and "USER 0" not in text
    assert dx.base_image(engine, "1.2.3", "cpu") == dx.CPU_BASE_IMAGE


def test_an_engine_without_a_production_image_says_so():
    with pytest.raises(ValueError, match="no production image"):
        dx.base_image("peft", "1.2.3", "production")


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-v"]))


def test_the_image_installs_the_lock_the_local_environment_installs(client, image, local_env):
    import json
    import re

    assert image.lock["id"] == local_env.lock["id"]
    listing = client.containers.run(
        image.tag,
        network_mode="none",
        remove=True,
        entrypoint=[
            "/opt/venv/bin/python",
            "-c",
            "import importlib.metadata as m, json; print(json.dumps("
            "{d.metadata['Name']: d.version for d in m.distributions()}))",
        ],
    )

    def norm(pkgs):
        return {
            re.sub(r"[-_.]+", "-", k).lower(): v
            for k, v in pkgs.items()
            if k.lower() not in ("pip", "setuptools")
        }

    assert norm(json.loads(listing)) == norm(local_env.packages)


# Every engine's image runs what its venv runs

ENGINE_STAGES = {
    "llamacpp": ["convert", "load", "generate"],
    "vllm": ["load", "generate"],
    "sglang": ["load", "generate"],
}


def _in_image(client, image, code: str) -> str:
    return client.containers.run(
        image.tag, network_mode="none", remove=True, entrypoint=["/opt/venv/bin/python", "-c", code]
    ).decode()


@pytest.mark.slow
@pytest.mark.timeout(3000)
@pytest.mark.parametrize("fixture", IDENTITY_FIXTURES)
@pytest.mark.parametrize("engine", sorted(ENGINE_STAGES))
def test_each_engines_image_is_its_venv_and_gives_its_verdicts(client, models, tmp_path, engine, fixture):
    """A probe per engine, in its CPU image and in its venv, side by side: the same image
    contents, the same patches, the same verdicts."""
    import json
    import re

    from matrix import env_patches, probing

    version = ENGINES[engine].default_version
    env = ensure_env(engine, version, say=lambda _m: None)
    image = dx.ensure_image(engine, version, client=client, say=lambda _m: None)
    assert image.lock["id"] == env.lock["id"]
    assert image.environment_id == env.environment_id

    def norm(pkgs):
        return {
            re.sub(r"[-_.]+", "-", k).lower(): v
            for k, v in pkgs.items()
            if k.lower() not in ("pip", "setuptools")
        }

    listing = _in_image(
        client,
        image,
        "import importlib.metadata as m, json; print(json.dumps("
        "{d.metadata['Name']: d.version for d in m.distributions()}))",
    )
    assert norm(json.loads(listing)) == norm(env.packages)
    patched = _in_image(
        client,
        image,
        "import pathlib, sys; print(pathlib.Path(sys.prefix, "
        "'dayone-patches.json').read_text() if pathlib.Path(sys.prefix, "
        "'dayone-patches.json').exists() else '[]')",
    )
    assert json.loads(patched) == env_patches.recorded_patches(Path(env.python))

    stages = ENGINE_STAGES[engine]
    got = {}
    for executor in ("local", "docker"):
        settings = probing.ProbeSettings(
            timeout_s=900, memory_mb=8192, executor=executor, logs_root=tmp_path / executor
        )
        got[executor] = probing.probe(
            models / fixture, engine, version, stages, settings=settings, say=lambda _m: None
        )
    verdicts = {k: [(r["stage"], r["status"], r["failure_class"]) for r in v] for k, v in got.items()}
    assert verdicts["docker"] == verdicts["local"], [r.get("message") for r in got["docker"]]
    if not fixture.startswith("broken-"):
        assert all(status == "pass" for _, status, _ in verdicts["docker"]), verdicts
    assert {r["engine"]["environment_id"] for r in got["docker"]} == {env.environment_id}
    assert got["docker"][0]["engine"]["image_digest"].startswith("sha256:")


def test_a_terminated_dayone_leaves_no_container_running(client, image, models, tmp_path):
    """SIGTERM (a cancelled CI job, a stopped nightly) while a probe container runs: dayone
    removes it before it goes, instead of leaving it running."""
    import signal

    out = tmp_path / "out"
    code = (
        "import sys; sys.path.insert(0, %r)\n"
        "from pathlib import Path\n"
        "from matrix import docker_executor as dx\n"
        "from probes.runner import ProbeRequest\n"
        "req = ProbeRequest(engine='transformers', model_dir=Path(%r), stages=['load'])\n"
        "out = Path(%r); dx._prepare_out_dir(out)\n"
        "cfg = dx.container_config(req, %r, out, dx.DEFAULT_LIMITS,"
        " ['-c', 'import time; time.sleep(600)'])\n"
        "cfg['entrypoint'] = ['python3']\n"
        "dx.run_container(dx.connect(), cfg, out / 'log', timeout_s=600)\n"
    ) % (str(REPO), str(models / "llama"), str(out), image.image_id)
    before = {c.id for c in client.containers.list(all=True, filters={"label": dx.LABEL_CONTAINER})}
    proc = subprocess.Popen([sys.executable, "-c", code])
    try:
        started = set()
        deadline = time.monotonic() + 60
        while not started and time.monotonic() < deadline:
            time.sleep(0.5)
            started = {c.id for c in client.containers.list(filters={"label": dx.LABEL_CONTAINER})} - before
        assert started, "the probe container never started"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == -signal.SIGTERM  # it still dies of the signal
        for cid in started:
            with pytest.raises(docker.errors.NotFound):
                client.containers.get(cid)
    finally:
        proc.kill()
        for c in client.containers.list(all=True, filters={"label": dx.LABEL_CONTAINER}):
            if c.id not in before:
                c.remove(force=True)


def test_an_installed_dayone_probes_in_a_container(installed_dayone, client, image, models, tmp_path):
    """A user's `pip install dayone`: its Dockerfiles and base-image script travel as package
    data, and its probe in a container gives the checkout's verdicts in the checkout's image."""
    import json

    where = installed_dayone.run("env", "list", "--json")  # the installed CLI answers
    assert where.returncode == 0
    proc = installed_dayone.run(
        "probe",
        str(models / "llama"),
        "-e",
        f"{ENGINE}=={VERSION}",
        "--executor",
        "docker",
        "--no-store",
        "--json",
        "--stage",
        "load",
        "--stage",
        "generate",
        timeout=900,
    )
    records = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert [(r["stage"], r["status"]) for r in records] == [("load", "pass"), ("generate", "pass")], (
        proc.stderr
    )
    assert records[0]["engine"]["image"] == image.tag
    assert records[0]["engine"]["lock"]["id"] == image.lock["id"]


def test_the_engines_cache_outlives_its_container(client, image, models, tmp_path):
    """The engine's content-keyed caches persist between its probes, as the local ones do
    (vLLM's model-info cache saves a start-up subprocess); the container finds it at
    $DAYONE_CACHE, and it is the engine's own folder on the host."""
    name = f"dayone-test-{os.getpid()}-{time.time_ns()}"
    code = (
        "import os, pathlib; p = pathlib.Path(os.environ['DAYONE_CACHE'], %r); "
        "print('found' if p.exists() else 'new'); p.write_text('1')"
    ) % name
    first = _run_in_sandbox(client, image, models / "llama", tmp_path / "a", code)
    second = _run_in_sandbox(client, image, models / "llama", tmp_path / "b", code)
    try:
        assert first[0] == 0 and "new" in first[1]
        assert second[0] == 0 and "found" in second[1]
        assert (dx.engine_cache(ENGINE) / name).read_text() == "1"
        assert dx.engine_cache("vllm") != dx.engine_cache(ENGINE)
    finally:
        (dx.engine_cache(ENGINE) / name).unlink(missing_ok=True)
