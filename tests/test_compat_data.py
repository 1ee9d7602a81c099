"""Support data in MDN browser-compat-data's shape (matrix/compat_data.py): the statements, the
document valid against its JSON Schema, `dayone export --data`, the API."""

from __future__ import annotations

import datetime as dt
import json

import jsonschema
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from matrix import compat_data as CD
from matrix.release_diff import Verdict
from service.app import create_app
from tests.test_release_diff import history, probe, record
from conftest import filled_store

NOW = dt.datetime(2026, 12, 3, 5, 30, 7, tzinfo=dt.timezone.utc)
GOOD = Verdict("pass", "load")


def bad(why="wrong_output", stage="parity"):
    return Verdict("fail", stage, why)


def partial(msg="transformers fallback (--model-impl transformers)"):
    return Verdict("degraded", "load", "fallback", msg)


def validator():
    return jsonschema.Draft202012Validator(
        CD.schema(), format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )


@pytest.mark.parametrize(
    "history_, statement",
    [
        # supported since the first release probed
        ([("0.30.0", GOOD), ("0.31.0", GOOD)], {"version_added": "0.30.0"}),
        # supported since a later one
        (
            [("0.29.0", bad("unsupported_architecture", "load")), ("0.31.0", GOOD)],
            {"version_added": "0.31.0"},
        ),
        # supported, then broken: version_removed, with why
        (
            [("0.30.0", GOOD), ("0.31.0", GOOD), ("0.32.0", bad())],
            {
                "version_added": "0.30.0",
                "version_removed": "0.32.0",
                "notes": "Broken since 0.32.0: parity wrong_output.",
            },
        ),
        # partial, then full: two statements, newest first
        (
            [("0.30.0", partial()), ("0.31.0", GOOD)],
            [
                {"version_added": "0.31.0"},
                {
                    "version_added": "0.30.0",
                    "version_removed": "0.31.0",
                    "partial_implementation": True,
                    "notes": "Degraded (load: transformers fallback (--model-impl transformers)).",
                },
            ],
        ),
        # works, broken, works again
        (
            [("1.0", GOOD), ("1.1", bad()), ("1.2", GOOD)],
            [
                {"version_added": "1.2"},
                {
                    "version_added": "1.0",
                    "version_removed": "1.1",
                    "notes": "Broken since 1.1: parity wrong_output.",
                },
            ],
        ),
        # never worked
        (
            [("1.0", bad("crash", "load")), ("1.1", bad("crash", "load"))],
            {"version_added": False, "notes": "Not working in any release probed (1.0 to 1.1): load crash."},
        ),
        # no verdict at all: unknown (null)
        (
            [("1.0", Verdict("error", "load", "infra"))],
            {"version_added": None, "notes": "No verdict (error)."},
        ),
        # a no-verdict release in between changes nothing; order given does not matter
        ([("1.2", GOOD), ("1.1", Verdict("error", "load")), ("1.0", GOOD)], {"version_added": "1.0"}),
        # PEP 440 order: the post release after its final, the rc before
        (
            [("1.0.post1", bad()), ("1.0", GOOD), ("1.0rc1", bad())],
            {
                "version_added": "1.0",
                "version_removed": "1.0.post1",
                "notes": "Broken since 1.0.post1: parity wrong_output.",
            },
        ),
    ],
)
def test_support_statements(history_, statement):
    assert CD.support_statement(history_) == statement


def test_document_is_valid_and_mdn_shaped():
    obs = (
        history()
        + probe("org/model", "0.32.0", 2)
        + probe("org/model", "0.32.0rc1", 1, "fail", "skipped", "skipped", fc="crash")
    )
    doc = CD.compat_document(obs, NOW)
    errors = sorted(validator().iter_errors(doc), key=str)
    assert not errors, errors[0]
    assert doc["__meta"] == {
        "version": "1.20261203.19807",
        "schema_version": 1,
        "timestamp": "2026-12-03T05:30:07Z",
        "generator": "dayone",
    }
    support = doc["architectures"]["qwen3_5_moe_text"]["__compat"]["support"]["vllm"]
    assert support == {
        "version_added": "0.31.0",
        "version_removed": "0.32.0",
        "notes": "Broken since 0.32.0: parity wrong_output.",
    }
    assert doc["architectures"]["gemma4_text"]["__compat"]["support"]["vllm"] == {"version_added": "0.32.0"}
    assert doc["architectures"]["granite"]["__compat"]["support"]["vllm"][1]["partial_implementation"] is True
    assert doc["models"]["org/model"]["__compat"] == {
        "source": "org/model",
        "support": {"vllm": {"version_added": "0.32.0"}},
    }
    releases = doc["engines"]["vllm"]["releases"]
    assert list(releases) == ["0.30.0", "0.31.0", "0.32.0rc1", "0.32.0", "0.32.0.post1"]
    assert releases["0.32.0.post1"]["status"] == "current"
    assert releases["0.32.0rc1"]["status"] == "beta" and releases["0.31.0"]["status"] == "retired"
    # the schema refuses what MDN's would: an unknown key, an empty array of statements
    bad_doc = json.loads(json.dumps(doc))
    bad_doc["architectures"]["gemma4_text"]["__compat"]["support"]["vllm"]["since"] = "0.32.0"
    assert list(validator().iter_errors(bad_doc))
    bad_doc["architectures"]["gemma4_text"]["__compat"]["support"]["vllm"] = []
    assert list(validator().iter_errors(bad_doc))


@pytest.fixture(scope="module")
def db_url(tmp_path_factory):
    return filled_store(tmp_path_factory.mktemp("cd"), [record(o) for o in history()])


def test_export_data_package_and_api(db_url, tmp_path):
    from service.cli import app

    out = tmp_path / "data"
    res = CliRunner().invoke(app, ["export", "--data", str(out), "--db", db_url])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["architectures"] == 8 and summary["engines"] == ["vllm"]
    doc = json.loads((out / "data.json").read_text())
    schema = json.loads((out / "schema/compat-data.schema.json").read_text())
    jsonschema.Draft202012Validator(schema).validate(doc)
    package = json.loads((out / "package.json").read_text())
    assert package["name"] == "dayone-compat-data" and package["version"] == doc["__meta"]["version"]
    assert summary["version"] == package["version"]
    with TestClient(create_app(db_url)) as c:
        api = c.get("/api/v1/compat").json()
        assert c.get("/api/v1/compat/schema").json() == schema
    validator().validate(api)
    assert api["architectures"] == doc["architectures"]
    res = CliRunner().invoke(app, ["export", "--db", db_url])
    assert res.exit_code == 2 and "--data DIR" in res.output
