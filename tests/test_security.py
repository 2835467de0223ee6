"""Security promises: every write endpoint needs the bearer token (401 without one,
403 with a wrong one, compared in constant time); the lookup server cannot write to
the snapshot it serves; no code unpickles, evals or YAML-loads what it reads."""
from __future__ import annotations

import ast
import hashlib

import lmdb
import pytest

from lookup_server import app_state
from schemas.settings import PROJECT_ROOT
from schemas.snapshot import DATA_FILE

from tests.collector_fixtures import TOKEN, in_process_collector, landed
from tests.lookup_fixtures import ADMIN_TOKEN, publish_snapshot



@pytest.fixture
def collector_app(tmp_path, monkeypatch):
    with in_process_collector(tmp_path, monkeypatch) as app:
        yield app


def secured_operations(app) -> list[tuple[str, str]]:
    """(method, url) of each operation the app's /openapi.json says needs the token,
    path parameters filled in: a new write endpoint is covered as soon as it is described."""
    spec = app.test_client().get("/openapi.json").get_json()
    found = [(method.upper(), path.replace("{product_id}", "7"))
             for path, item in spec["paths"].items() for method, operation in item.items()
             if operation.get("security", spec.get("security"))]
    assert found
    return found


# --- bearer tokens --------------------------------------------------------------------

BAD_CREDENTIALS = {
    "missing": ({}, 401),
    "basic scheme": ({"Authorization": "Basic dXNlcjpwYXNz"}, 401),
    "bearer, empty": ({"Authorization": "Bearer "}, 401),
    "wrong token": ({"Authorization": "Bearer " + "x" * len(TOKEN)}, 403),
    "token's prefix": ({"Authorization": "Bearer " + TOKEN[:-1]}, 403),
    "token, then more": ({"Authorization": f"Bearer {TOKEN}{TOKEN}"}, 403),
}


def _assert_refused(response, status: int) -> None:
    assert response.status_code == status, response.get_data(as_text=True)[:300]
    body = response.get_json()
    assert body["error"]["code"] == status and body["error"]["message"]
    if status == 401:
        assert response.headers["WWW-Authenticate"].lower().startswith("bearer")


@pytest.mark.parametrize("credentials, status",
                         [({"Authorization": f"Bearer {ADMIN_TOKEN}"}, 403), *BAD_CREDENTIALS.values()],
                         ids=["admin token", *BAD_CREDENTIALS.keys()])
def test_collector_writes_need_the_token(collector_app, tmp_path, credentials, status):
    """Each described write of the collector refuses, in JSON, and writes nothing."""
    client = collector_app.test_client()
    for method, url in secured_operations(collector_app):
        body = {"user_id": 1, "event_type": "view", "product_id": 7}
        _assert_refused(client.open(url, method=method, json=body, headers=credentials), status)
    assert landed(tmp_path, "events") == [] and landed(tmp_path, "products") == []


@pytest.mark.parametrize("credentials, status",
                         [({"Authorization": f"Bearer {TOKEN}"}, 403), *BAD_CREDENTIALS.values()],
                         ids=["collector token", *BAD_CREDENTIALS.keys()])
def test_admin_endpoints_need_the_token(admin_app, credentials, status):
    """Each admin operation refuses without LOOKUP_ADMIN_TOKEN, and the pin is untouched."""
    client = admin_app.test_client()
    operations = secured_operations(admin_app)
    assert {method for method, _ in operations} == {"GET", "PUT", "DELETE"}
    for method, url in operations:
        _assert_refused(client.open(url, method=method, json={"algorithm": "popular"}, headers=credentials),
                        status)
    pinned = client.get("/v1/admin/pin", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert pinned.get_json() == {"pinned": None}


def test_admin_disabled_without_a_configured_token(make_app, snapshot_root, monkeypatch):
    """No token configured: every admin call is 403, whatever it presents."""
    monkeypatch.delenv("LOOKUP_ADMIN_TOKEN", raising=False)
    publish_snapshot(snapshot_root, "v1")
    client = make_app().test_client()
    for headers in ({}, {"Authorization": "Bearer "}, {"Authorization": "Bearer anything-at-all-here"}):
        _assert_refused(client.get("/v1/admin/pin", headers=headers), 403)


def test_tokens_are_compared_in_constant_time(collector_app, admin_app, monkeypatch):
    """Both apps compare the presented token with hmac.compare_digest, never ``==``."""
    import lookup_server.auth as auth

    compared = []
    real = auth.hmac.compare_digest

    def spy(a, b):
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    assert collector_app.test_client().post("/v1/events", json={}, headers={"Authorization": "Bearer nope"}) \
        .status_code == 403
    assert admin_app.test_client().get("/v1/admin/pin", headers={"Authorization": "Bearer nope"}).status_code == 403
    assert compared == [(b"nope", TOKEN.encode()), (b"nope", ADMIN_TOKEN.encode())]


# --- the snapshot is read-only ----------------------------------------------------------

def test_the_snapshot_is_opened_read_only(app, client):
    """The reader's LMDB environment is read-only: a write transaction is refused, and
    serving (answers, the admin pin, metrics) leaves the data file byte for byte."""
    reader = app_state(app).snapshot.reader
    data_file = reader.path / DATA_FILE
    before = hashlib.sha256(data_file.read_bytes()).hexdigest()
    assert reader._env.flags()["readonly"] is True
    with pytest.raises(lmdb.ReadonlyError):
        with reader._env.begin(write=True) as txn:
            txn.put(b"written", b"by the lookup server")
    for url in ("/v1/users/1/recommendations", "/v1/users/999/recommendations?k=3",
                "/v1/products/10/similar", "/readyz", "/metrics"):
        assert client.get(url).status_code == 200
    assert hashlib.sha256(data_file.read_bytes()).hexdigest() == before


# --- no unpickling, eval or YAML loading of outside data --------------------------------

SCANNED = ("jobs", "lookup_server", "schemas", "airflow_dags", "scripts", "conf", "bench")
# Calls that run code chosen by whoever wrote their input: (module, function) or a builtin.
DANGEROUS = {("pickle", "load"), ("pickle", "loads"), ("pickle", "Unpickler"), ("cPickle", "load"),
             ("cPickle", "loads"), ("dill", "load"), ("dill", "loads"), ("cloudpickle", "load"),
             ("cloudpickle", "loads"), ("marshal", "load"), ("marshal", "loads"), ("shelve", "open"),
             ("yaml", "unsafe_load"), ("yaml", "full_load"), ("pandas", "read_pickle"),
             ("joblib", "load"), ("torch", "load")}
DANGEROUS_BUILTINS = {"eval", "exec", "__import__"}
SAFE_YAML_LOADERS = {"SafeLoader", "CSafeLoader", "BaseLoader", "CBaseLoader"}
# Reviewed uses: "path: call" -> why it is safe. Both run this repository's own code.
ALLOWED = {
    "bench/snapshot_build/baseline.py: exec": "runs jobs/build_snapshot.py as of an older commit "
                                              "(git show), to benchmark against it",
    "bench/serving/gunicorn.reference.conf.py: exec": "reads conf/gunicorn.conf.py so the benchmark's "
                                                      "reference servers run with the same settings",
}


def dangerous_calls(source: str) -> list[str]:
    """The dangerous calls in ``source``, as "module.function" or a builtin's name
    (following ``import x as y`` and ``from x import f as g``)."""
    tree = ast.parse(source)
    modules: dict[str, str] = {}    # local name -> module
    functions: dict[str, tuple[str, str]] = {}  # local name -> (module, function)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                modules[alias.asname or alias.name.split(".")[0]] = alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                functions[alias.asname or alias.name] = (node.module.split(".")[0], alias.name)
    aliases = {"np": "numpy", "pd": "pandas"}
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func, call = node.func, None
        if isinstance(func, ast.Name) and func.id in DANGEROUS_BUILTINS and func.id not in functions:
            found.append(func.id)
            continue
        if isinstance(func, ast.Name) and func.id in functions:
            call = functions[func.id]
        elif isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
            module = modules.get(func.value.id, aliases.get(func.value.id, func.value.id))
            call = (module, func.attr)
        if call is None:
            continue
        keywords = {k.arg: k.value for k in node.keywords}
        if call in DANGEROUS:
            found.append(".".join(call))
        elif call == ("yaml", "load"):
            loader = keywords.get("Loader", node.args[1] if len(node.args) > 1 else None)
            name = getattr(loader, "attr", getattr(loader, "id", None))
            if name not in SAFE_YAML_LOADERS:
                found.append("yaml.load")
        elif call == ("numpy", "load"):
            allow = keywords.get("allow_pickle")
            if not (allow is None or (isinstance(allow, ast.Constant) and allow.value is False)):
                found.append("numpy.load(allow_pickle)")
    return found


@pytest.mark.parametrize("source, expected", [
    ("import pickle\npickle.loads(b)", ["pickle.loads"]),
    ("from pickle import load as l\nl(f)", ["pickle.load"]),
    ("import marshal as m\nm.loads(b)", ["marshal.loads"]),
    ("eval(text)", ["eval"]),
    ("exec(code)", ["exec"]),
    ("import yaml\nyaml.load(f)", ["yaml.load"]),
    ("import yaml\nyaml.load(f, Loader=yaml.FullLoader)", ["yaml.load"]),
    ("import yaml\nyaml.load(f, Loader=yaml.SafeLoader)", []),
    ("import yaml\nyaml.safe_load(f)", []),
    ("import numpy as np\nnp.load(f, allow_pickle=True)", ["numpy.load(allow_pickle)"]),
    ("import numpy as np\nnp.load(f, allow_pickle=False)", []),
    ("import json\njson.loads(b)", []),
    ("re.compile(p).exec(s)", []),
])
def test_the_scan_finds_what_it_looks_for(source, expected):
    assert dangerous_calls(source) == expected


def test_no_unpickling_eval_or_yaml_load_in_the_code():
    """No module of ours calls pickle/marshal loads, eval/exec or an unsafe yaml.load,
    except the reviewed uses in ALLOWED."""
    sources = sorted(path for folder in SCANNED for path in (PROJECT_ROOT / folder).rglob("*.py"))
    assert len(sources) > 50
    found = {f"{path.relative_to(PROJECT_ROOT)}: {call}"
             for path in sources for call in dangerous_calls(path.read_text())}
    assert found - set(ALLOWED) == set()
    assert set(ALLOWED) <= found, "an allowed use is gone: drop it from ALLOWED"
