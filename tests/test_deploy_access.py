"""deploy/access: the UI proxy requires authentication, the S3 policies are least-privilege."""

import json
from fnmatch import fnmatch
from pathlib import Path

import pytest

ACCESS = Path(__file__).resolve().parent.parent / "deploy" / "access"
BUCKET = "arn:aws:s3:::personalize-data"
WRITE = {"s3:PutObject", "s3:DeleteObject"}


def grants(role: str) -> list[tuple[str, str]]:
    """(action, resource) pairs allowed by a policy file."""
    doc = json.loads((ACCESS / f"s3-policy-{role}.json").read_text())
    out = []
    for statement in doc["Statement"]:
        assert statement["Effect"] == "Allow"
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        out += [(a, r) for a in actions for r in resources]
    return out


def allowed(role: str, action: str, key: str) -> bool:
    return any(a == action and fnmatch(f"{BUCKET}/{key}", r) for a, r in grants(role))


@pytest.mark.parametrize("role", ["pipeline", "deletion", "consumer"])
def test_no_wildcards_or_bucket_level_writes(role):
    for action, resource in grants(role):
        assert "*" not in action and resource not in ("*", f"{BUCKET}/*"), (action, resource)
        assert action.startswith("s3:") and not action.startswith(("s3:PutBucket", "s3:DeleteBucket")), action


def test_each_role_reaches_only_its_prefixes():
    # the pipeline reads datasets and writes artifacts and outputs, never datasets
    assert allowed("pipeline", "s3:GetObject", "datasets/group/interactions.csv")
    assert not any(allowed("pipeline", w, "datasets/group/interactions.csv") for w in WRITE)
    assert all(allowed("pipeline", w, "artifacts/solutions/foryou/solution.json") for w in WRITE)
    assert all(allowed("pipeline", w, "output/foryou/job.jsonl.out") for w in WRITE)
    # deletion rewrites datasets and removes solution versions, nothing else
    assert all(allowed("deletion", w, "datasets/group/interactions.csv") for w in WRITE)
    assert allowed("deletion", "s3:DeleteObject", "artifacts/solutions/foryou/versions/v1/model.npz")
    assert not any(allowed("deletion", w, "output/foryou/job.jsonl.out") for w in WRITE)
    # consumers only read outputs
    assert allowed("consumer", "s3:GetObject", "output/foryou/job.jsonl.out")
    assert not allowed("consumer", "s3:GetObject", "datasets/group/users.csv")
    assert not any(a in WRITE for a, _ in grants("consumer"))


def test_ui_proxy_authenticates_every_request_and_keeps_secrets_out_of_files():
    nginx = (ACCESS / "nginx.conf").read_text()
    ui = nginx[nginx.index("location / {") :]
    assert "auth_request /oauth2/auth;" in ui and "proxy_pass http://127.0.0.1:3000;" in ui
    assert "proxy_set_header Upgrade $http_upgrade;" in ui  # live run logs over websockets
    assert "listen 443 ssl;" in nginx and "return 301 https://" in nginx
    cfg = (ACCESS / "oauth2-proxy.cfg").read_text()
    assert 'http_address = "127.0.0.1:4180"' in cfg
    settings = [line for line in cfg.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert not [line for line in settings if "secret" in line.lower()]  # from the environment only
