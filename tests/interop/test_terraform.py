"""The Terraform AWS provider (hashicorp/aws, from the machine's offline mirror) manages keys,
aliases, a grant and reads the data sources, encrypted EBS volumes with their snapshot and
the account's default encryption, and a multi-Region key with its replica through providers
for two Regions, against `keyhold serve --dev`: apply, a plan with no changes, a change,
destroy."""

import os
import pathlib
import shutil
import subprocess

import pytest

from conftest import Server

CONFIG = pathlib.Path(__file__).parent / "terraform" / "main.tf"
MIRRORS = [os.environ.get("KEYHOLD_TF_PLUGIN_DIR", ""), "/opt/tf-plugins",
           "/usr/share/terraform/plugins", str(pathlib.Path.home() / ".terraform.d" / "plugins")]


def _mirror():
    for m in MIRRORS:
        if m and (pathlib.Path(m) / "registry.terraform.io" / "hashicorp" / "aws").is_dir():
            return m
    return None


def _terraform(tmp_path, config):
    tf = shutil.which("terraform")
    mirror = _mirror()
    if not tf or not mirror:
        pytest.skip("SKIP: Terraform or its offline hashicorp/aws provider mirror is not "
                    "installed on this machine")
    rc = tmp_path / "cli.tfrc"
    rc.write_text(
        'provider_installation {\n'
        f'  filesystem_mirror {{\n    path = "{mirror}"\n'
        '    include = ["registry.terraform.io/hashicorp/aws"]\n  }\n'
        '  direct {\n    exclude = ["registry.terraform.io/hashicorp/aws"]\n  }\n}\n')
    work = tmp_path / "tf"
    work.mkdir()
    shutil.copy(config, work / "main.tf")
    env = {**os.environ, "TF_CLI_CONFIG_FILE": str(rc), "TF_IN_AUTOMATION": "1",
           "CHECKPOINT_DISABLE": "1"}

    def run(*args, check=True):
        p = subprocess.run([tf, *args, "-no-color", "-input=false"], cwd=work, env=env,
                           capture_output=True, text=True, timeout=600)
        if check:
            assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-4000:]
        return p

    run("init")
    return run


@pytest.fixture
def terraform(tmp_path):
    return _terraform(tmp_path, CONFIG)


@pytest.fixture
def terraform_volumes(tmp_path):
    return _terraform(tmp_path, CONFIG.parent / "volumes" / "main.tf")


@pytest.fixture
def terraform_regions(tmp_path):
    return _terraform(tmp_path, CONFIG.parent / "regions" / "main.tf")


def test_terraform_manages_keys_aliases_grants_and_data_sources(terraform):
    s = Server(["--dev"])
    try:
        kms = s.client()
        var = ["-var", f"endpoint={s.endpoint}"]
        terraform("apply", "-auto-approve", *var)
        keys = {a["AliasName"]: a["TargetKeyId"] for a in kms.list_aliases()["Aliases"]
                if "TargetKeyId" in a}
        sym = keys["alias/tf-app"]
        md = kms.describe_key(KeyId=sym)["KeyMetadata"]
        assert md["Description"] == "app data"
        assert kms.get_key_rotation_status(KeyId=sym)["KeyRotationEnabled"] is True
        grants = kms.list_grants(KeyId=sym)["Grants"]
        assert [g["Constraints"] for g in grants] == [
            {"EncryptionContextEquals": {"department": "finance"}}]
        assert kms.list_resource_tags(KeyId=sym)["Tags"] == [{"TagKey": "team", "TagValue": "payments"}]
        ext = kms.describe_key(KeyId=keys["alias/tf-imported"])["KeyMetadata"]
        assert ext["Origin"] == "EXTERNAL"

        # Nothing drifts: a plan right after apply has no changes.
        p = terraform("plan", "-detailed-exitcode", *var, check=False)
        assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-4000:]

        # A change applies, and then there is nothing left to change.
        change = [*var, "-var", "description=app data v2"]
        terraform("apply", "-auto-approve", *change)
        assert kms.describe_key(KeyId=sym)["KeyMetadata"]["Description"] == "app data v2"
        p = terraform("plan", "-detailed-exitcode", *change, check=False)
        assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-4000:]

        terraform("destroy", "-auto-approve", *change)
        assert kms.describe_key(KeyId=sym)["KeyMetadata"]["KeyState"] == "PendingDeletion"
        assert not [a for a in kms.list_aliases()["Aliases"] if a["AliasName"].startswith("alias/tf-")]
    finally:
        s.stop()


def test_terraform_manages_encrypted_volumes_and_default_encryption(terraform_volumes):
    s = Server(["--dev"])
    try:
        ec2 = s.client(service="ec2")
        var = ["-var", f"endpoint={s.endpoint}"]
        terraform_volumes("apply", "-auto-approve", *var)
        [vol] = ec2.describe_volumes()["Volumes"]
        assert vol["Encrypted"] and vol["Size"] == 1 and vol["VolumeType"] == "gp3"
        assert {t["Key"]: t["Value"] for t in vol["Tags"]} == {"Name": "data", "team": "payments"}
        key = s.client().describe_key(KeyId=vol["KmsKeyId"])["KeyMetadata"]
        assert key["Description"] == "volumes"
        assert ec2.get_ebs_encryption_by_default()["EbsEncryptionByDefault"]
        assert ec2.get_ebs_default_kms_key_id()["KmsKeyId"] == key["Arn"]
        [snap] = ec2.describe_snapshots()["Snapshots"]
        assert snap["VolumeId"] == vol["VolumeId"] and snap["Encrypted"]
        p = terraform_volumes("plan", "-detailed-exitcode", *var, check=False)
        assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-4000:]
        # Growing the volume is ModifyVolume, in place; a tag change is CreateTags.
        grown = [*var, "-var", "size=2", "-var", "team=ledger"]
        terraform_volumes("apply", "-auto-approve", *grown)
        [after] = ec2.describe_volumes()["Volumes"]
        assert after["VolumeId"] == vol["VolumeId"] and after["Size"] == 2
        assert {t["Key"]: t["Value"] for t in after["Tags"]}["team"] == "ledger"
        p = terraform_volumes("plan", "-detailed-exitcode", *grown, check=False)
        assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-4000:]
        terraform_volumes("destroy", "-auto-approve", *grown)
        assert ec2.describe_volumes()["Volumes"] == []
        assert ec2.describe_snapshots()["Snapshots"] == []
        assert not ec2.get_ebs_encryption_by_default()["EbsEncryptionByDefault"]
    finally:
        s.stop()


def test_terraform_manages_a_replica_key_in_a_second_region(terraform_regions):
    s = Server(["--dev"])
    try:
        us, eu = s.client(region="us-east-1"), s.client(region="eu-west-1")
        var = ["-var", f"endpoint={s.endpoint}"]
        terraform_regions("apply", "-auto-approve", *var)
        [primary] = us.list_keys()["Keys"]
        kid = primary["KeyId"]
        assert kid.startswith("mrk-")
        md = eu.describe_key(KeyId="alias/tf-replica")["KeyMetadata"]
        assert md["KeyId"] == kid and md["KeyState"] == "Enabled"
        assert md["Description"] == "replica in eu-west-1"
        assert md["MultiRegionConfiguration"]["PrimaryKey"]["Region"] == "us-east-1"
        assert eu.list_resource_tags(KeyId=kid)["Tags"] == [{"TagKey": "site", "TagValue": "dublin"}]
        assert eu.get_key_rotation_status(KeyId=kid)["KeyRotationEnabled"] is True
        blob = us.encrypt(KeyId=kid, Plaintext=b"tf")["CiphertextBlob"]
        assert eu.decrypt(CiphertextBlob=blob)["Plaintext"] == b"tf"

        p = terraform_regions("plan", "-detailed-exitcode", *var, check=False)
        assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-4000:]
        change = [*var, "-var", "replica_description=dr copy"]
        terraform_regions("apply", "-auto-approve", *change)
        assert eu.describe_key(KeyId=kid)["KeyMetadata"]["Description"] == "dr copy"
        p = terraform_regions("plan", "-detailed-exitcode", *change, check=False)
        assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-4000:]

        terraform_regions("destroy", "-auto-approve", *change)
        assert eu.describe_key(KeyId=kid)["KeyMetadata"]["KeyState"] == "PendingDeletion"
        assert us.describe_key(KeyId=kid)["KeyMetadata"]["KeyState"] == "PendingReplicaDeletion"
    finally:
        s.stop()
