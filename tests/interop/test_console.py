"""The web console: in a real browser (Debian's chromium driven by playwright-core), and its
bad-input paths with plain HTTP requests."""

import json
import os
import pathlib
import re
import shutil
import subprocess

import pytest
import requests

from conftest import Server, init_data_dir, run_keyhold

BROWSER = pathlib.Path(__file__).parent / "browser"
ARTIFACTS = pathlib.Path(os.environ.get("KEYHOLD_ARTIFACTS", pathlib.Path(__file__).parents[2] / "target" / "artifacts"))

def chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.fixture(scope="module")
def playwright():
    npm = shutil.which("npm")
    if not npm or not shutil.which("node"):
        pytest.skip("SKIP: Node.js and npm are not installed")
    if not chromium():
        pytest.skip("SKIP: chromium is not installed (the test command installs the Debian "
                    "package where it can)")
    if not (BROWSER / "node_modules" / "playwright-core").exists():
        p = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=BROWSER,
                           capture_output=True, text=True, timeout=600)
        assert p.returncode == 0, p.stderr


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """`keyhold init` + `serve` over HTTPS, with principals in two accounts."""
    data = tmp_path_factory.mktemp("console") / "data"
    admin = init_data_dir(data)
    p = run_keyhold("admin", "principal", "create", "--data-dir", str(data), "--account",
                    "444455556666", "--name", "other", "--json")
    assert p.returncode == 0, p.stderr
    other = json.loads(p.stdout)
    s = Server(["--data-dir", str(data), "--s3-listen", "127.0.0.1:0"])
    try:
        yield s, admin, other
    finally:
        s.stop()


def test_the_console_in_a_browser(playwright, site):
    s, admin, other = site
    assert s.endpoint.startswith("https://")
    kms = s.client(admin["access_key_id"], admin["secret_access_key"])
    kms.create_key(Description="<script>alert(1)</script>")
    # aws/s3 exists once a service first uses it.
    kms.describe_key(KeyId="alias/aws/s3")
    shots = ARTIFACTS / "console-screenshots"
    env = {**os.environ, "CHROMIUM": chromium()}
    p = subprocess.run(
        ["node", "console.mjs", s.endpoint, admin["access_key_id"], admin["secret_access_key"],
         other["access_key_id"], other["secret_access_key"], str(shots)],
        cwd=BROWSER, capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    facts = json.loads(p.stdout.strip().splitlines()[-1])
    assert facts["consoleErrors"] == [], facts
    # What the browser did is what the API sees.
    md = kms.describe_key(KeyId="alias/browser-made")["KeyMetadata"]
    assert md["KeyId"] == facts["keyId"]
    assert kms.describe_key(KeyId="alias/browser-second")["KeyMetadata"]["KeyId"] == md["KeyId"]
    assert md["KeyState"] == "Disabled"  # cancelling a deletion leaves the key disabled
    tags = {t["TagKey"]: t["TagValue"] for t in kms.list_resource_tags(KeyId=md["KeyId"])["Tags"]}
    assert tags == {"team": "web", "env": "test"}
    assert len(kms.list_key_rotations(KeyId=md["KeyId"])["Rotations"]) == 1
    policy = kms.get_key_policy(KeyId=md["KeyId"], PolicyName="default")["Policy"]
    assert "Edited in the console" in policy
    for name in ("signin", "keys", "key", "audit", "managed"):
        assert (shots / f"{name}.png").stat().st_size > 0


def browserless(s):
    """A plain HTTP client trusting the server's CA (not the environment's bundle)."""
    http = requests.Session()
    http.trust_env = False
    http.verify = s.ca
    return http


def signed_in(s, creds):
    """A requests session signed in to the console; returns (session, csrf token)."""
    http = browserless(s)
    r = http.post(f"{s.endpoint}/console/signin",
                  data={"access_key_id": creds["access_key_id"],
                        "secret_access_key": creds["secret_access_key"]})
    assert r.status_code == 200 and r.url.endswith("/console/keys"), r.text
    csrf = re.search(r'name="csrf" value="([^"]+)"', r.text).group(1)
    return http, csrf


def test_bad_input_gets_a_clear_page_and_changes_nothing(site):
    s, admin, _ = site
    kms = s.client(admin["access_key_id"], admin["secret_access_key"])
    key = kms.create_key(Description="kept")["KeyMetadata"]["KeyId"]
    base = f"{s.endpoint}/console"
    anon = browserless(s)
    # Not signed in: every page goes to the sign-in.
    r = anon.get(f"{base}/keys/{key}", allow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/console/signin"
    r = anon.post(f"{base}/keys/{key}/disable", data={"csrf": "x"}, allow_redirects=False)
    assert r.status_code == 303
    # Wrong credentials: 401 with a message, audited, and slowed.
    r = anon.post(f"{base}/signin", data={"access_key_id": admin["access_key_id"],
                                          "secret_access_key": "nope"})
    assert r.status_code == 401 and "wrong" in r.text
    assert r.elapsed.total_seconds() >= 0.2
    # Security headers on every page.
    assert "default-src 'none'" in r.headers["content-security-policy"]
    assert r.headers["x-frame-options"] == "DENY"

    http, csrf = signed_in(s, admin)
    assert http.cookies.get("keyhold_console")
    # Missing and forged CSRF tokens; a post from another origin.
    for data, headers in [({}, {}), ({"csrf": "forged"}, {}),
                          ({"csrf": csrf}, {"Origin": "https://evil.example"})]:
        r = http.post(f"{base}/keys/{key}/disable", data=data, headers=headers)
        assert r.status_code == 403, r.text
    assert kms.describe_key(KeyId=key)["KeyMetadata"]["KeyState"] == "Enabled"
    # An oversized form.
    r = http.post(f"{base}/keys/{key}/description",
                  data={"csrf": csrf, "description": "x" * (70 * 1024)})
    assert r.status_code == 413
    assert kms.describe_key(KeyId=key)["KeyMetadata"]["Description"] == "kept"
    # Unknown key ids and pages.
    for path in ("/keys/00000000-0000-0000-0000-000000000000", "/keys/not-a-key",
                 "/keys/..%2F..%2Fetc%2Fpasswd", "/nope", "/audit/no-such-event"):
        r = http.get(base + path)
        assert r.status_code == 404, (path, r.status_code)
    # Script in an alias, a tag and a policy is shown escaped.
    r = http.post(f"{base}/keys/{key}/tag-add",
                  data={"csrf": csrf, "tag_key": "<b>k</b>", "tag_value": "<script>x()</script>"})
    assert r.status_code == 200, r.text
    assert "<script>x()</script>" not in r.text and "&#60;script&#62;x()" in r.text
    r = http.post(f"{base}/keys/{key}/alias-add",
                  data={"csrf": csrf, "alias": "alias/<img src=x>"})
    assert r.status_code == 400 and "ValidationException" in r.text
    assert "<img src=x>" not in r.text
    r = http.post(f"{base}/keys/{key}/policy",
                  data={"csrf": csrf, "policy": '{"<script>": 1}'})
    assert r.status_code == 400 and "MalformedPolicyDocumentException" in r.text
    assert '{"<script>"' not in r.text
    # Refused actions show AWS's message: a deletion window out of range.
    r = http.post(f"{base}/keys/{key}/schedule-deletion",
                  data={"csrf": csrf, "confirm": "yes", "days": "3"})
    assert r.status_code == 400 and "ValidationException" in r.text
    assert kms.describe_key(KeyId=key)["KeyMetadata"]["KeyState"] == "Enabled"
    # Signed out, the old cookie is worthless.
    r = http.post(f"{base}/signout", data={"csrf": csrf})
    assert r.url.endswith("/console/signin")
    old = browserless(s)
    old.cookies.set("keyhold_console", http.cookies.get("keyhold_console") or "gone")
    r = old.get(f"{base}/keys", allow_redirects=False)
    assert r.status_code == 303


def test_sign_ins_are_audited(site):
    s, admin, _ = site
    http, _ = signed_in(s, admin)
    r = http.get(f"{s.endpoint}/console/audit", params={"event": "ConsoleLogin"})
    assert r.status_code == 200 and "signin.amazonaws.com" in r.text


def test_buckets_show_their_encryption(site):
    s, admin, other = site
    kms = s.client(admin["access_key_id"], admin["secret_access_key"])
    key = kms.create_key()["KeyMetadata"]["Arn"]
    s3 = s.s3(admin["access_key_id"], admin["secret_access_key"])
    s3.create_bucket(Bucket="console-shown")
    s3.put_bucket_encryption(Bucket="console-shown", ServerSideEncryptionConfiguration={
        "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms",
                                                          "KMSMasterKeyID": key},
                   "BucketKeyEnabled": True}]})
    s3.put_object(Bucket="console-shown", Key="by-default.txt", Body=b"a")
    s3.put_object(Bucket="console-shown", Key="<i>s3</i>.txt", Body=b"bb",
                  ServerSideEncryption="AES256")
    http, _ = signed_in(s, admin)
    r = http.get(f"{s.endpoint}/console/buckets")
    assert r.status_code == 200 and "console-shown" in r.text
    assert f"SSE-KMS with {key}, Bucket Key" in r.text
    r = http.get(f"{s.endpoint}/console/buckets/console-shown")
    assert r.status_code == 200
    assert "SSE-KMS (Bucket Key)" in r.text and key in r.text and "SSE-S3" in r.text
    assert "<i>s3</i>" not in r.text and "&#60;i&#62;s3" in r.text
    # Another account's principal sees neither the bucket nor its objects.
    theirs, _ = signed_in(s, other)
    assert "console-shown" not in theirs.get(f"{s.endpoint}/console/buckets").text
    assert theirs.get(f"{s.endpoint}/console/buckets/console-shown").status_code == 404
