"""exec and port-forward through the Python client's websocket stream API (websocket only:
no SPDY to fall back to). Run by tests/blackbox/websocket.rs inside the node's network
namespace with KUBECONFIG set; argv[1] is a running pod whose busybox httpd serves :8080.
"""
import os
import sys

from kubernetes import client, config
from kubernetes.stream import portforward, stream

config.load_kube_config(config_file=os.environ["KUBECONFIG"])
core = client.CoreV1Api()
pod = sys.argv[1]

# A plain exec returns the command's output.
out = stream(core.connect_get_namespaced_pod_exec, pod, "default",
             command=["cat", "/etc/hostname"], stdin=False, stdout=True, stderr=True, tty=False)
assert out == pod + "\n", repr(out)

# stdin reaches the command; stdout, stderr and the exit code come back apart.
resp = stream(core.connect_get_namespaced_pod_exec, pod, "default",
              command=["sh", "-c", "read line; echo got-$line; echo err-out >&2; exit 7"],
              stdin=True, stdout=True, stderr=True, tty=False, _preload_content=False)
resp.write_stdin("python\n")
out, err = "", ""
while resp.is_open():
    resp.update(timeout=5)
    if resp.peek_stdout():
        out += resp.read_stdout()
    if resp.peek_stderr():
        err += resp.read_stderr()
assert out == "got-python\n", repr(out)
assert err == "err-out\n", repr(err)
assert resp.returncode == 7, resp.returncode

# port-forward: an HTTP request to the pod's port 8080 through the websocket.
pf = portforward(core.connect_get_namespaced_pod_portforward, pod, "default", ports="8080")
sock = pf.socket(8080)
sock.setblocking(True)
sock.sendall(b"GET / HTTP/1.0\r\nHost: pod\r\n\r\n")
data = b""
while True:
    chunk = sock.recv(4096)
    if not chunk:
        break
    data += chunk
sock.close()
assert data.startswith(b"HTTP/1.") and b"hello from kubox" in data, data
assert pf.error(8080) is None, pf.error(8080)
pf.close()
print("ok")
