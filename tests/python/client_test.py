"""The official Python `kubernetes` client against a running kubox server.

Run by tests/python_client.rs with KUBECONFIG pointing at the server's admin kubeconfig.
Exits non-zero (with a traceback) on the first failed expectation.
"""
import os
import threading

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

config.load_kube_config(config_file=os.environ["KUBECONFIG"])
core = client.CoreV1Api()
apps = client.AppsV1Api()

# Discovery and version.
version = client.VersionApi().get_code()
assert version.major == "1", version

# CRUD on a namespace and a configmap.
core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="py")))
cm = core.create_namespaced_config_map(
    "py", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="c1", labels={"a": "b"}), data={"k": "v"})
)
assert cm.metadata.uid and cm.metadata.resource_version, cm
got = core.read_namespaced_config_map("c1", "py")
assert got.data == {"k": "v"}, got.data

# Dict patches are sent as strategic merge patches.
core.patch_namespaced_config_map("c1", "py", {"data": {"k2": "v2"}})
got = core.read_namespaced_config_map("c1", "py")
assert got.data == {"k": "v", "k2": "v2"}, got.data

# Label selector list.
items = core.list_namespaced_config_map("py", label_selector="a=b").items
assert [i.metadata.name for i in items] == ["c1"], items
assert core.list_namespaced_config_map("py", label_selector="a,a!=b").items == []

# Conflict on a stale update.
stale = core.read_namespaced_config_map("c1", "py")
core.patch_namespaced_config_map("c1", "py", {"data": {"k3": "v3"}})
stale.data["k"] = "changed"
try:
    core.replace_namespaced_config_map("c1", "py", stale)
    raise AssertionError("stale replace succeeded")
except ApiException as e:
    assert e.status == 409, e

# Deployment with strategic merge of containers by name.
dep = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "web"},
    "spec": {
        "replicas": 1,
        "selector": {"matchLabels": {"app": "web"}},
        "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "web", "image": "busybox:test"}]},
        },
    },
}
apps.create_namespaced_deployment("py", dep)
apps.patch_namespaced_deployment(
    "web", "py", {"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "busybox:2"}]}}}}
)
d = apps.read_namespaced_deployment("web", "py")
assert [c.image for c in d.spec.template.spec.containers] == ["busybox:2"], d.spec.template.spec.containers
scale = apps.read_namespaced_deployment_scale("web", "py")
assert scale.spec.replicas == 1, scale
apps.patch_namespaced_deployment_scale("web", "py", {"spec": {"replicas": 4}})
assert apps.read_namespaced_deployment("web", "py").spec.replicas == 4

# Watch sees ADDED, MODIFIED and DELETED.
rv = core.list_namespaced_config_map("py").metadata.resource_version
events = []
w = watch.Watch()


def consume():
    for ev in w.stream(core.list_namespaced_config_map, "py", resource_version=rv, timeout_seconds=20):
        events.append((ev["type"], ev["object"].metadata.name))
        if ev["type"] == "DELETED":
            w.stop()


t = threading.Thread(target=consume)
t.start()
core.create_namespaced_config_map("py", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="w")))
core.patch_namespaced_config_map("w", "py", {"data": {"x": "y"}})
core.delete_namespaced_config_map("w", "py")
t.join(30)
assert events == [("ADDED", "w"), ("MODIFIED", "w"), ("DELETED", "w")], events

# 404 and 422 come back as ApiExceptions with upstream codes.
try:
    core.read_namespaced_config_map("missing", "py")
    raise AssertionError("read of a missing object succeeded")
except ApiException as e:
    assert e.status == 404, e
try:
    core.create_namespaced_config_map("py", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="Bad_Name")))
    raise AssertionError("invalid name accepted")
except ApiException as e:
    assert e.status == 422, e

print("python client: all checks passed")
