"""The cluster build's go.mod rewrites and the pause image archive (no build, no lab)."""

from __future__ import annotations

import io
import json
import tarfile

from .kubebuild import etcd_go_mod, kubernetes_go_mod, oci_archive

KUBERNETES_GO_MOD = """\
module k8s.io/kubernetes

require (
\tk8s.io/api v0.0.0
\tk8s.io/sample-controller v0.0.0
)

replace (
\tk8s.io/api => ./staging/src/k8s.io/api
\tk8s.io/cri-api => ./staging/src/k8s.io/cri-api
\tk8s.io/sample-cli-plugin => ./staging/src/k8s.io/sample-cli-plugin
\tk8s.io/sample-controller => ./staging/src/k8s.io/sample-controller
)
"""


def test_staging_replaces_point_at_the_published_modules() -> None:
    text = kubernetes_go_mod(KUBERNETES_GO_MOD, "v0.37.2")
    assert "\tk8s.io/api => k8s.io/api v0.37.2\n" in text
    assert "\tk8s.io/cri-api => k8s.io/cri-api v0.37.2\n" in text
    assert "staging" not in text
    assert "sample-c" not in text  # not published, not needed: dropped with their requires


def test_etcd_sibling_replaces_point_at_the_published_modules() -> None:
    text = etcd_go_mod(
        "replace (\n\tgo.etcd.io/etcd/api/v3 => ../api\n\tgo.etcd.io/etcd/client/v3 => ../client/v3\n)\n"
    )
    assert "\tgo.etcd.io/etcd/api/v3 => go.etcd.io/etcd/api/v3 v3.7.4\n" in text
    assert "\tgo.etcd.io/etcd/client/v3 => go.etcd.io/etcd/client/v3 v3.7.4\n" in text


def test_pause_archive_is_an_oci_layout_containerd_names() -> None:
    data = oci_archive("registry.k8s.io/pause:3.10.2", {"pause": b"x"}, entrypoint=["/pause"])
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        files = {m.name: archive.extractfile(m).read() for m in archive.getmembers()}  # type: ignore[union-attr]
    assert {"oci-layout", "index.json"} <= set(files)
    [manifest] = json.loads(files["index.json"])["manifests"]
    assert manifest["annotations"]["io.containerd.image.name"] == "registry.k8s.io/pause:3.10.2"
    body = json.loads(files["blobs/sha256/" + manifest["digest"].split(":")[1]])
    config = json.loads(files["blobs/sha256/" + body["config"]["digest"].split(":")[1]])
    assert config["config"]["Entrypoint"] == ["/pause"]
