"""A real single-node Kubernetes for the lab: etcd, kube-apiserver, kube-scheduler,
kube-controller-manager, containerd and a kubelet, with its own certificates and folders.

The programs are built from their Go modules and cached by version (tests/lab/kubebuild.py);
containerd, runc and the CNI plugins are Debian's. The settings this machine kind needs are
those of ../shared/K8S-LAB.md (cgroup v1, no CAP_SYS_RESOURCE, iptables left alone).

Pods use the pod network, not the host's: a CNI bridge of the cluster's own (``ecrlab<N>``,
10.244.<N>.0/24, N the last byte of the lab's bind address) whose gateway address is on the
host. There a dnsmasq answers the lab's AWS host names (the registries, STS, ECR) with that
gateway address, and an haproxy passes TCP on gateway:443 to the lab's SNI router, so a pod
reaches ``<account>.dkr.ecr.<region>.amazonaws.com`` by its real name through cluster DNS, as a
pod on EKS does. dnsmasq is the kubelet's cluster DNS; podman's network setup is not touched.

Lab images get into containerd with ``podman save`` + ``ctr images import``; the pause image is
Kubernetes' own pause.c (kubebuild.py).

Bearer tokens the API server does not know itself go to aws-iam-authenticator, its token webhook
(tests/lab/iam_authenticator.py), as on EKS: the lab's EKS cluster in moto names this API server
(``eks_tags()``), and a ``k8s-aws-v1.`` token of the Airflow role gets the README's Role. The API
server's audit log records each request of that mapped user (``audit_events()``).

Teardown removes every process, mount, link and folder the cluster made, including the host
paths the kubelet and containerd create outside their configured roots (recorded at start when
they did not exist yet).

Several lab clusters may run on one machine at once (a CI run beside a developer's tests, each
lab on its own bind address). Each kubelet has its own cgroup root (``/ecrlab<N>``, the
kubelet's ``cgroupRoot``), so its ``kubepods`` hierarchy is its own, and removed with it. The host
paths every kubelet and containerd share are removed only by the last lab cluster to stop:
each running cluster has a marker in ``SHARED``, and the host paths lab clusters created are
listed there, both read and written under an flock.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import gotools, iam_authenticator, moto_iam, procs, referrers
from .kubebuild import PAUSE_IMAGE, KubeBuild
from .paths import ACCOUNTS, moto_hosts
from .procs import LabError, Proc

if TYPE_CHECKING:
    from .lab import Lab

NAMESPACE = "ecr-promote"  # the example DAGs' namespace and service account
AIRFLOW_USER, AIRFLOW_GROUP = "airflow-worker", "ecr-promoters"  # the README's RoleBinding names the group
README = Path(__file__).resolve().parents[2] / "README.md"
SERVICE_ACCOUNT = "ecr-promote"
SERVICE_CIDR = "10.96.0.0/16"
CNI_BIN = Path("/usr/lib/cni")
# Paths the kubelet and containerd create whatever their configured roots are (K8S-LAB.md).
HOST_PATHS = (
    Path("/var/lib/kubelet"),
    Path("/var/log/containers"),
    Path("/run/containerd"),
    Path("/var/lib/cni"),
    Path("/run/netns"),  # containerd's pod network namespaces (removed with each sandbox)
)
CGROUP_ROOT = Path("/sys/fs/cgroup")
# Shared by the lab clusters of this machine: a marker per running cluster (<bridge>.json, naming
# its state file), the host paths lab clusters created (created.json) and the lock of both.
SHARED = Path("/run/ecr-promote-lab-clusters")
START_TIMEOUT = 240.0  # seconds for the whole cluster to come up (about 10 s once built, unloaded)
AUTHENTICATOR = "aws-iam-authenticator"
ORDER = (
    "etcd",
    AUTHENTICATOR,
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "containerd",
    "kubelet",
)


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, text=True, timeout=60)


class ClusterCA:
    """The cluster's own CA and the certificates it signs (EC P-256, 30 days)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.cert, self.key = folder / "ca.crt", folder / "ca.key"

    def create(self) -> ClusterCA:
        self.folder.mkdir(parents=True, exist_ok=True)
        _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(self.key))
        _openssl(
            "req", "-x509", "-new", "-key", str(self.key), "-sha256", "-days", "30",
            "-subj", "/CN=ecr-promote lab cluster CA", "-out", str(self.cert),
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        )  # fmt: skip
        return self

    def issue(
        self, name: str, cn: str, *, org: str = "", sans: tuple[str, ...] = (), server: bool = False
    ) -> tuple[Path, Path]:
        """A client certificate (``server=True``: a serving one for ``sans``); returns (cert, key)."""
        cert, key, csr = (self.folder / f"{name}.{ext}" for ext in ("crt", "key", "csr"))
        ext = self.folder / f"{name}.ext"
        lines = ["basicConstraints=CA:FALSE", "keyUsage=critical,digitalSignature,keyEncipherment"]
        lines.append(f"extendedKeyUsage={'serverAuth,clientAuth' if server else 'clientAuth'}")
        if sans:
            alt = ",".join(f"IP:{h}" if h.replace(".", "").isdigit() else f"DNS:{h}" for h in sans)
            lines.append(f"subjectAltName={alt}")
        ext.write_text("\n".join(lines) + "\n")
        subject = f"/CN={cn}" + (f"/O={org}" if org else "")
        _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(key))
        _openssl("req", "-new", "-key", str(key), "-subj", subject, "-out", str(csr))
        _openssl(
            "x509", "-req", "-in", str(csr), "-CA", str(self.cert), "-CAkey", str(self.key),
            "-CAcreateserial", "-CAserial", str(self.folder / "ca.srl"), "-days", "30", "-sha256",
            "-extfile", str(ext), "-out", str(cert),
        )  # fmt: skip
        return cert, key


def kubeconfig(server: str, ca: Path, cert: Path, key: Path, user: str, namespace: str = "default") -> str:
    """A kubeconfig (JSON, which is YAML) with the certificates embedded."""

    def b64(path: Path) -> str:
        return base64.b64encode(path.read_bytes()).decode()

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "lab", "cluster": {"server": server, "certificate-authority-data": b64(ca)}}],
        "users": [
            {"name": user, "user": {"client-certificate-data": b64(cert), "client-key-data": b64(key)}}
        ],
        "contexts": [{"name": "lab", "context": {"cluster": "lab", "user": user, "namespace": namespace}}],
        "current-context": "lab",
    }
    return json.dumps(config, indent=2)


class Cluster:
    """One lab cluster beside a running ``Lab``; ``start()`` or ``attach()`` before use.

    After start: ``kubeconfig`` (cluster-admin, for setup and tests), ``server`` (the API
    server's URL), ``node`` (the node name), ``gateway`` (the pod network's address on the host,
    where cluster DNS and the route to the lab's AWS listen).
    """

    def __init__(self, lab: Lab, *, log: Callable[[str], None] | None = None) -> None:
        self.lab = lab
        self.dir = lab.state_dir / "cluster"
        self.log: Callable[[str], None] = log or (lambda msg: print(msg, file=sys.stderr))
        octet = int(lab.bind.rsplit(".", 1)[1])
        self.bridge = f"ecrlab{octet}"
        self.node = f"ecr-promote-lab-{octet}"
        self.subnet = f"10.244.{octet}.0/24"
        self.gateway = f"10.244.{octet}.1"
        self.procs: dict[str, Proc] = {}
        self._popen: dict[str, subprocess.Popen[bytes]] = {}
        self.ports: dict[str, int] = {}
        self.timings: dict[str, float] = {}
        self.cgroup_root = f"/{self.bridge}"  # the kubelet's cgroupRoot: its kubepods live under it
        # Sockets need a short path (a Unix socket's is at most 104 bytes here), which the state
        # folder under pytest's and CI's temporary folders is not: containerd's socket and state
        # (its shims' sockets) and the kubelet's root (its pod-resources and plugin sockets, and
        # the pods' volumes) live in a folder of this cluster's own under /run.
        self.run_dir = Path("/run") / self.bridge
        self.ip_forward: str | None = None  # its value before the bridge plugin set it
        self.images: list[str] = []  # imported into containerd
        self._state_file = self.dir / "cluster.json"

    # ------------------------------------------------------------------ paths
    @property
    def kubeconfig(self) -> Path:
        return self.dir / "admin.kubeconfig"

    @property
    def socket(self) -> Path:
        return self.run_dir / "containerd.sock"

    @property
    def server(self) -> str:
        return f"https://{self.lab.bind}:{self.ports['apiserver']}"

    def binaries(self) -> dict[str, Path]:
        built = KubeBuild(self.lab.cache_dir, self.log).all()
        built[AUTHENTICATOR] = gotools.build(gotools.AWS_IAM_AUTHENTICATOR, self.lab.cache_dir, self.log)
        return built

    def eks_tags(self) -> dict[str, str]:
        """CreateCluster tags that make the lab's EKS cluster (moto) describe this API server's
        endpoint and CA (tests/lab/moto_iam.py)."""
        return {
            moto_iam.EKS_ENDPOINT_TAG: self.server,
            moto_iam.EKS_CA_FILE_TAG: str(self.dir / "pki" / "ca.crt"),
        }

    # -------------------------------------------------------------- lifecycle
    def start(self, timeout: float = START_TIMEOUT) -> Cluster:
        """Build (or find) the programs, start every part, wait for the node to be Ready."""
        if self._state_file.exists():
            raise LabError(f"a lab cluster is recorded in {self.dir}: `python -m tests.lab down` first")
        t0 = time.monotonic()
        binaries = self.binaries()
        self.timings["build"] = time.monotonic() - t0
        t1 = time.monotonic()
        try:
            self._start(binaries, deadline=t1 + timeout)
        except BaseException:
            self.stop()
            raise
        self.timings["start"] = time.monotonic() - t1
        return self

    def _start(self, bin: dict[str, Path], deadline: float) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
        _unmount_under([str(self.run_dir) + "/"], [], str(self.run_dir))  # a killed run's leftovers
        shutil.rmtree(self.run_dir, ignore_errors=True)
        for sub in ("pki", "logs", "etcd", "containerd", "cni", "pod-logs"):
            (self.dir / sub).mkdir(parents=True)
        (self.run_dir / "kubelet").mkdir(parents=True)
        self._save()  # from here on `down` can clean up even if start fails half way
        self._claim_host_paths()
        self._cgroups()
        bind = self.lab.bind
        for name in (
            "etcd",
            "etcd-peer",
            "apiserver",
            "scheduler",
            "controller-manager",
            "kubelet",
            "healthz",
            "authenticator",
        ):
            self.ports[name] = procs.free_port(bind)
        self._network()
        self._certificates()
        etcd_url = f"http://{bind}:{self.ports['etcd']}"
        peer_url = f"http://{bind}:{self.ports['etcd-peer']}"
        self._spawn("etcd", [
            str(bin["etcd"]), "--name", "lab", "--data-dir", str(self.dir / "etcd"),
            "--listen-client-urls", etcd_url, "--advertise-client-urls", etcd_url,
            "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
            "--initial-cluster", f"lab={peer_url}", "--log-level", "warn",
            "--unsafe-no-fsync",  # a throwaway store: fsyncs only slow a loaded machine down
        ])  # fmt: skip
        self._authenticator(bin[AUTHENTICATOR], deadline)
        pki = self.dir / "pki"
        self._spawn("kube-apiserver", [
            str(bin["kube-apiserver"]), f"--etcd-servers={etcd_url}",
            f"--bind-address={bind}", f"--secure-port={self.ports['apiserver']}",
            f"--advertise-address={self.gateway}", f"--service-cluster-ip-range={SERVICE_CIDR}",
            f"--tls-cert-file={pki / 'apiserver.crt'}", f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            f"--kubelet-client-certificate={pki / 'apiserver-kubelet.crt'}",
            f"--kubelet-client-key={pki / 'apiserver-kubelet.key'}",
            f"--kubelet-certificate-authority={pki / 'ca.crt'}",
            "--kubelet-preferred-address-types=InternalIP",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            "--authorization-mode=Node,RBAC", "--enable-admission-plugins=NodeRestriction",
            f"--authentication-token-webhook-config-file={iam_authenticator.webhook_kubeconfig(self._authn_dir)}",
            "--authentication-token-webhook-version=v1beta1",  # the TokenReview it answers
            f"--audit-policy-file={iam_authenticator.audit_policy(self.dir / 'audit-policy.yaml')}",
            f"--audit-log-path={self.dir / 'logs' / 'audit.log'}", "--audit-log-format=json",
            "--profiling=false",
        ])  # fmt: skip
        self._wait("kube-apiserver /readyz", lambda: self._kubectl_ok("get", "--raw=/readyz"), deadline)
        self._spawn("kube-controller-manager", [
            str(bin["kube-controller-manager"]), f"--kubeconfig={self.dir / 'controller-manager.kubeconfig'}",
            f"--bind-address={bind}", f"--secure-port={self.ports['controller-manager']}",
            "--leader-elect=false", "--controllers=*", "--use-service-account-credentials=true",
            f"--service-account-private-key-file={pki / 'sa.key'}", f"--root-ca-file={pki / 'ca.crt'}",
            f"--cluster-signing-cert-file={pki / 'ca.crt'}", f"--cluster-signing-key-file={pki / 'ca.key'}",
            "--profiling=false",
        ])  # fmt: skip
        self._spawn("kube-scheduler", [
            str(bin["kube-scheduler"]), f"--kubeconfig={self.dir / 'scheduler.kubeconfig'}",
            f"--bind-address={bind}", f"--secure-port={self.ports['scheduler']}",
            "--leader-elect=false", "--profiling=false",
        ])  # fmt: skip
        self._containerd(bin)
        self._wait("containerd", self.socket.exists, deadline)
        self._import(bin["pause"])
        self._kubelet(bin)
        self._wait("node Ready", self._node_ready, deadline)
        self._setup_namespace()
        for proc in self.procs.values():
            proc.argv = proc.cmdline() or proc.argv
        self._save()

    @property
    def _authn_dir(self) -> Path:
        return self.dir / "aws-iam-authenticator"

    def _authenticator(self, binary: Path, deadline: float) -> None:
        """aws-iam-authenticator, the API server's token webhook, in the lab's mount namespace;
        ready once it listens (it has written the webhook's kubeconfig by then)."""
        t0 = time.monotonic()
        port = self.ports["authenticator"]
        config = iam_authenticator.write_config(
            self._authn_dir, address=self.lab.bind, port=port, group=AIRFLOW_GROUP
        )
        argv = iam_authenticator.command(binary, config, self.lab.procs["ns"].pid)
        self._spawn(AUTHENTICATOR, argv, iam_authenticator.environment())
        self._wait(AUTHENTICATOR, lambda: procs.port_in_use(self.lab.bind, port), deadline)
        self.timings["authenticator_start"] = time.monotonic() - t0
        self.log(
            f"lab cluster: aws-iam-authenticator listening in {self.timings['authenticator_start']:.1f}s"
        )

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        proc, popen = procs.spawn(name, argv, self.dir / "logs" / f"{name}.log", env)
        self.procs[name], self._popen[name] = proc, popen
        self._save()

    def _wait(self, what: str, probe: Callable[[], bool], deadline: float) -> None:
        live = [(p, self._popen[n]) for n, p in self.procs.items() if n in self._popen]
        procs.wait_until(what, probe, live, timeout=max(1.0, deadline - time.monotonic()))

    # ---------------------------------------------------------------- network
    def _network(self) -> None:
        """The pod bridge with its gateway address (made before the kubelet, which needs the
        address as its node IP), cluster DNS and the route to the lab's SNI router on it."""
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True, check=False, timeout=30)
        for argv in (
            ["ip", "link", "add", self.bridge, "type", "bridge"],
            ["ip", "addr", "add", f"{self.gateway}/24", "dev", self.bridge],
            ["ip", "link", "set", self.bridge, "up"],
        ):
            subprocess.run(argv, check=True, capture_output=True, timeout=30)
        self.ip_forward = Path("/proc/sys/net/ipv4/ip_forward").read_text().strip()
        self._save()
        (self.dir / "cni" / "10-lab.conflist").write_text(
            json.dumps(
                {
                    "cniVersion": "0.4.0",
                    "name": self.bridge,
                    "plugins": [
                        {
                            "type": "bridge",
                            "bridge": self.bridge,
                            "isGateway": True,
                            "ipMasq": False,
                            "ipam": {
                                "type": "host-local",
                                "ranges": [[{"subnet": self.subnet, "gateway": self.gateway}]],
                                "routes": [{"dst": "0.0.0.0/0"}],
                                "dataDir": str(self.dir / "cni-ipam"),
                            },
                        }
                    ],
                },
                indent=2,
            )
        )
        names = [*moto_hosts(), *(a.registry_host for a in ACCOUNTS.values()), referrers.HOST]
        self._spawn("dnsmasq", [
            "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-hosts", "--no-resolv",
            "--bind-interfaces", f"--listen-address={self.gateway}", "--port=53",
            f"--pid-file={self.dir / 'dnsmasq.pid'}", "--user=root", "--log-queries",
            f"--log-facility={self.dir / 'logs' / 'dnsmasq-queries.log'}",
            "--local=/cluster.local/", "--local=/amazonaws.com/",
            *(f"--host-record={name},{self.gateway}" for name in names),
        ])  # fmt: skip
        router = self.dir / "router.cfg"
        router.write_text(
            "defaults\n    mode tcp\n    timeout connect 5s\n    timeout client 1h\n    timeout server 1h\n"
            f"frontend pods\n    bind {self.gateway}:443\n"
            # the referrers registry has an address of its own (tests/lab/referrers.py); the
            # rest of the lab is behind the lab's own router
            "    tcp-request inspect-delay 5s\n    tcp-request content accept if { req_ssl_hello_type 1 }\n"
            f"    use_backend referrers if {{ req_ssl_sni -i {referrers.HOST} }}\n    default_backend lab\n"
            f"backend lab\n    server router {self.lab.bind}:443\n"
            f"backend referrers\n    server registry {referrers.own_address(self.lab.bind)}:443\n"
        )
        self._spawn("pod-router", ["haproxy", "-db", "-f", str(router)])

    # ----------------------------------------------------------- certificates
    def _certificates(self) -> None:
        pki = self.dir / "pki"
        ca = ClusterCA(pki).create()
        bind = self.lab.bind
        ca.issue(
            "apiserver",
            "kube-apiserver",
            server=True,
            sans=(bind, self.gateway, "10.96.0.1", "localhost", "kubernetes", "kubernetes.default",
                  "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"),
        )  # fmt: skip
        ca.issue("apiserver-kubelet", "kube-apiserver-kubelet-client", org="system:masters")
        ca.issue("kubelet-serving", f"system:node:{self.node}", server=True, sans=(self.gateway, self.node))
        _openssl("genrsa", "-out", str(pki / "sa.key"), "2048")
        _openssl("rsa", "-in", str(pki / "sa.key"), "-pubout", "-out", str(pki / "sa.pub"))
        for name, cn, org in (
            ("admin", "lab-admin", "system:masters"),
            ("airflow", AIRFLOW_USER, AIRFLOW_GROUP),  # what an EKS access entry maps Airflow to
            ("controller-manager", "system:kube-controller-manager", ""),
            ("scheduler", "system:kube-scheduler", ""),
            ("kubelet", f"system:node:{self.node}", "system:nodes"),
        ):
            cert, key = ca.issue(name, cn, org=org)
            (self.dir / f"{name}.kubeconfig").write_text(kubeconfig(self.server, ca.cert, cert, key, cn))

    # ------------------------------------------------------- node: containerd
    def _containerd(self, bin: dict[str, Path]) -> None:
        root = self.dir / "containerd"
        cri = 'plugins."io.containerd.grpc.v1.cri"'
        config = f"""\
version = 2
root = "{root / "root"}"
state = "{self.run_dir / "containerd-state"}"
# the opt plugin would install into /opt/containerd
disabled_plugins = ["io.containerd.internal.v1.opt", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "{self.socket}"
[metrics]
  address = ""
[{cri}]
  sandbox_image = "{PAUSE_IMAGE}"
  # no CAP_SYS_RESOURCE here: runc cannot lower oom_score_adj below the shim's (K8S-LAB.md)
  restrict_oom_score_adj = true
  enable_selinux = false
  [{cri}.containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [{cri}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [{cri}.containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{root / "runc"}"
  [{cri}.cni]
    bin_dir = "{CNI_BIN}"
    conf_dir = "{self.dir / "cni"}"
    max_conf_num = 1
"""
        (root / "config.toml").write_text(config)
        self._spawn("containerd", ["containerd", "--config", str(root / "config.toml")])

    def ctr(self, *args: str, timeout: float = 300.0, check: bool = True) -> subprocess.CompletedProcess[str]:
        """``ctr`` on the cluster's containerd, in Kubernetes' namespace."""
        argv = ["ctr", "--address", str(self.socket), "--namespace", "k8s.io", *args]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
        if check and done.returncode != 0:
            raise LabError(f"{' '.join(argv)} exited {done.returncode}: {done.stderr[-2000:]}")
        return done

    def _import(self, archive: Path) -> None:
        self.ctr("images", "import", str(archive))

    def import_images(self, *refs: str) -> None:
        """Copy lab images from podman's storage into containerd (``podman save`` | ``ctr import``)."""
        if all(ref in self.images or not ref for ref in refs):
            return  # nothing new to record (the load tests' threads each ask for the same images)
        for ref in refs:
            if ref in self.images or not ref:
                continue
            if self.ctr("images", "check", f"name=={ref}", check=False).stdout.count(ref):
                self.images.append(ref)
                continue
            t0 = time.monotonic()
            with tempfile.TemporaryDirectory(dir=self.dir) as tmp:
                archive = Path(tmp) / "image.tar"
                subprocess.run(
                    ["podman", "save", "--format", "docker-archive", "-o", str(archive), ref],
                    env=self.lab.podman_env(),
                    check=True,
                    capture_output=True,
                    timeout=300,
                )
                self.ctr("images", "import", str(archive))
            self.images.append(ref)
            self.log(f"lab cluster: imported {ref} in {time.monotonic() - t0:.1f}s")
        self._save()

    # ---------------------------------------------------------- node: kubelet
    def _kubelet(self, bin: dict[str, Path]) -> None:
        pki = self.dir / "pki"
        resolv = self.dir / "resolv.conf"
        resolv.write_text(f"nameserver {self.gateway}\n")
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": self.gateway,
            "port": self.ports["kubelet"],
            "readOnlyPort": 0,
            "healthzBindAddress": self.lab.bind,
            "healthzPort": self.ports["healthz"],
            "tlsCertFile": str(pki / "kubelet-serving.crt"),
            "tlsPrivateKeyFile": str(pki / "kubelet-serving.key"),
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(pki / "ca.crt")},
            },
            "authorization": {"mode": "Webhook"},
            # This machine kind (K8S-LAB.md): cgroup v1 without systemd, swap allowed, no iptables.
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": self.cgroup_root,  # not the shared /kubepods of every other kubelet
            "failCgroupV1": False,
            "failSwapOn": False,
            "makeIPTablesUtilChains": False,
            "containerRuntimeEndpoint": f"unix://{self.socket}",
            "clusterDNS": [self.gateway],
            "clusterDomain": "cluster.local",
            "resolvConf": str(resolv),
            # each cluster its own: a kubelet removes the log folders of pods it does not know
            "podLogsDir": str(self.dir / "pod-logs"),
            "serializeImagePulls": False,
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "evictionHard": {
                "memory.available": "100Mi",
                "nodefs.available": "1%",
                "imagefs.available": "1%",
            },
            "protectKernelDefaults": False,
        }
        (self.dir / "kubelet.yaml").write_text(json.dumps(config, indent=2))
        self._spawn("kubelet", [
            str(bin["kubelet"]), f"--config={self.dir / 'kubelet.yaml'}",
            f"--kubeconfig={self.dir / 'kubelet.kubeconfig'}", f"--root-dir={self.run_dir / 'kubelet'}",
            f"--hostname-override={self.node}", f"--node-ip={self.gateway}",
        ])  # fmt: skip

    def _node_ready(self) -> bool:
        done = self.kubectl("get", "node", self.node, "-o", "json", check=False, timeout=10)
        if done.returncode != 0:
            return False
        conditions = json.loads(done.stdout)["status"].get("conditions", [])
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    def _setup_namespace(self) -> None:
        """The example DAGs' namespace (Pod Security ``restricted`` enforced), its service account
        and the README's Role for Airflow's identity, as a platform team would create them."""
        self.add_namespace(NAMESPACE, "restricted")

    def add_namespace(self, name: str, pod_security: str) -> None:
        """A namespace enforcing the Pod Security level ``pod_security``, with the example DAGs'
        service account and exactly the README's Role and RoleBinding for Airflow's identity."""
        items = [
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": name, "labels": {"pod-security.kubernetes.io/enforce": pod_security}},
            },
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": SERVICE_ACCOUNT, "namespace": name},
            },
            *readme_rbac(name),
        ]
        self.kubectl(
            "apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
        )

    # ----------------------------------------------------------------- kubectl
    def kubectl(
        self, *args: str, input: str | None = None, timeout: float = 60.0, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """The built kubectl as cluster-admin."""
        kubectl = self.lab.cache_dir / "go" / "bin"
        binary = next(kubectl.glob("kubernetes-*/kubectl"), None)
        if binary is None:
            raise LabError("kubectl is not built (tests/lab/kubebuild.py)")
        argv = [str(binary), f"--kubeconfig={self.kubeconfig}", *args]
        done = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout, check=False)
        if check and done.returncode != 0:
            raise LabError(f"kubectl {' '.join(args)} exited {done.returncode}: {done.stderr[-2000:]}")
        return done

    def _kubectl_ok(self, *args: str) -> bool:
        return self.kubectl(*args, check=False, timeout=10).returncode == 0

    # -------------------------------------------------------------------- stop
    def stop(self) -> None:
        """Stop every part and remove all it made (bounded: about a minute at worst)."""
        errors: list[str] = []
        t0 = time.monotonic()
        if "kubelet" in self.procs and self.procs["kubelet"].alive() and self.procs.get("kube-apiserver"):
            self._drain(errors)
        drained = time.monotonic()
        for name in ("kubelet", "kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd"):
            self._stop_proc(name, errors)
        self._signal_authenticator()
        if "containerd" in self.procs:
            self._kill_tasks(errors)
        for name in [n for n in self.procs if n != "containerd"] + ["containerd"]:
            self._stop_proc(name, errors)
        self._kill_shims()
        self._unmount_all(errors)
        self._remove_host_paths(errors)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True, check=False, timeout=30)
        if self.ip_forward is not None:
            try:
                Path("/proc/sys/net/ipv4/ip_forward").write_text(self.ip_forward)
            except OSError as exc:
                errors.append(f"ip_forward: {exc}")
        self.procs.clear()
        self._popen.clear()
        for folder in (self.dir, self.run_dir):
            shutil.rmtree(folder, ignore_errors=True)
            if folder.exists():
                errors.append(f"{folder} still exists")
        self.timings["stop"] = time.monotonic() - t0
        self.log(f"lab cluster: stopped in {self.timings['stop']:.1f}s (pods drained in {drained - t0:.1f}s)")
        if errors:
            raise LabError("errors stopping the lab cluster: " + "; ".join(errors))

    def _stop_proc(self, name: str, errors: list[str]) -> None:
        if name not in self.procs:
            return
        t0 = time.monotonic()
        try:
            procs.stop(self.procs[name], self._popen.get(name), timeout=10.0)
            if time.monotonic() - t0 > 2:
                self.log(f"lab cluster: {name} took {time.monotonic() - t0:.1f}s to stop")
        except OSError as exc:
            errors.append(f"{name}: {exc}")

    def _signal_authenticator(self) -> None:
        """aws-iam-authenticator takes a first SIGTERM as the signal to stop its mappers and goes on
        serving; a second one ends it (its signal handler, k8s.io/sample-controller's): this is
        the first, ``_stop_proc`` sends the second (it waited its whole timeout otherwise)."""
        proc = self.procs.get(AUTHENTICATOR)
        if proc is not None and proc.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)

    def _drain(self, errors: list[str]) -> None:
        """Delete every pod and let the kubelet tear their sandboxes (network, mounts) down."""
        done = self.kubectl(
            "delete", "pods", "--all", "--all-namespaces", "--grace-period=0", "--force",
            "--wait=false", check=False, timeout=60,
        )  # fmt: skip
        if done.returncode != 0:
            errors.append(f"deleting pods: {done.stderr[-500:]}")
            return
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if not self._running_tasks():
                return
            time.sleep(0.5)

    def _running_tasks(self) -> list[str]:
        if not self.socket.exists():
            return []
        done = self.ctr("tasks", "ls", "-q", check=False, timeout=30)
        return done.stdout.split() if done.returncode == 0 else []

    def _kill_tasks(self, errors: list[str]) -> None:
        for task in self._running_tasks():
            self.ctr("tasks", "kill", "--signal", "SIGKILL", task, check=False, timeout=30)
        deadline = time.monotonic() + 20
        for task in self._running_tasks():
            while time.monotonic() < deadline:
                if self.ctr("tasks", "delete", task, check=False, timeout=30).returncode == 0:
                    break
                time.sleep(0.2)
            else:
                errors.append(f"containerd task {task} would not go")

    def _kill_shims(self) -> None:
        """Shims outlive containerd: stop those serving this cluster's socket (by PID)."""
        for pid, argv in _processes():
            if argv[0].endswith("containerd-shim-runc-v2") and str(self.socket) in argv:
                procs.stop(Proc("shim", pid, argv[:-1], ""), None, timeout=5.0)

    def _unmount_all(self, errors: list[str]) -> None:
        """Everything mounted under the cluster's folder, deepest first (container rootfs,
        the kubelet's tmpfs volumes, the network namespaces containerd keeps)."""
        _unmount_under([str(self.dir) + "/"], errors, str(self.dir))
        _unmount_under([str(self.run_dir) + "/"], errors, str(self.run_dir))

    def _cgroups(self) -> None:
        """The kubelet's cgroup root in every hierarchy (the kubelet requires it to exist)."""
        for hierarchy in _cgroup_hierarchies():
            folder = hierarchy / self.cgroup_root.lstrip("/")
            folder.mkdir(exist_ok=True)
            for name in ("cpuset.cpus", "cpuset.mems"):  # a new cpuset cgroup starts empty
                if (hierarchy / name).exists() and not (folder / name).read_text().strip():
                    (folder / name).write_text((hierarchy / name).read_text())

    def _remove_cgroups(self, errors: list[str]) -> None:
        """The cgroup root and all under it (the pods' cgroups, also runc's in the unified one)."""
        for hierarchy in _cgroup_hierarchies():
            top = hierarchy / self.cgroup_root.lstrip("/")
            if not top.is_dir():
                continue
            for folder in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
                _rmdir(folder)
            if not _rmdir(top):
                errors.append(f"cgroup {top} is not empty")

    @property
    def _marker(self) -> Path:
        return SHARED / f"{self.bridge}.json"

    def _claim_host_paths(self) -> None:
        """Mark this cluster as running, and add the shared host paths that do not exist yet (the
        kubelet or containerd will create them) to those lab clusters created."""
        with _shared_lock():
            created = set(_created_host_paths())
            created |= {str(p) for p in HOST_PATHS if not p.exists()}
            (SHARED / "created.json").write_text(json.dumps(sorted(created)))
            self._marker.write_text(json.dumps({"state": str(self._state_file), "pid": os.getpid()}))

    def _release_host_paths(self, errors: list[str]) -> None:
        """Drop this cluster's marker; the last lab cluster to stop removes the host paths lab
        clusters created (another one still uses them while it runs)."""
        with _shared_lock():
            self._marker.unlink(missing_ok=True)
            others = _running_clusters() + _kubelets(besides=self.run_dir)
            if others:
                self.log(f"lab cluster: shared host paths kept for the lab clusters still running ({others})")
                return
            created = _created_host_paths()
            if "/run/netns" in created:  # only lab clusters' sandboxes are in it
                _unmount_under(["/run/netns/"], errors, "/run/netns")
            for path in created:
                if os.path.ismount(path):  # `ip netns` bind-mounts /run/netns on itself
                    subprocess.run(["umount", path], capture_output=True, check=False, timeout=30)
                shutil.rmtree(path, ignore_errors=True)
                if Path(path).exists():  # a busy mount under it
                    errors.append(f"{path} could not be removed")
            for leftover in SHARED.iterdir():
                leftover.unlink()
            _rmdir(SHARED)  # a cluster starting now may have made its lock in it again

    def _remove_host_paths(self, errors: list[str]) -> None:
        self._remove_cgroups(errors)
        self._release_host_paths(errors)
        if Path("/var/log/containers").is_dir():  # another cluster's, or older: remove only our links
            for link in Path("/var/log/containers").iterdir():
                if link.is_symlink() and os.readlink(link).startswith(str(self.dir)):
                    link.unlink()

    # ---------------------------------------------------------------- records
    def _save(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        procs.save(
            self._state_file,
            list(self.procs.values()),
            {
                "ports": self.ports,
                "ip_forward": self.ip_forward,
                "images": self.images,
                "timings": self.timings,
            },
        )

    @classmethod
    def attach(cls, lab: Lab) -> Cluster | None:
        """The cluster recorded beside ``lab``, or None when there is none."""
        cluster = cls(lab)
        if not cluster._state_file.exists():
            return None
        plist, extra = procs.load(cluster._state_file)
        cluster.procs = {p.name: p for p in plist}
        cluster.ports = {k: int(v) for k, v in dict(extra["ports"]).items()}  # type: ignore[call-overload]
        cluster.ip_forward = extra.get("ip_forward")  # type: ignore[assignment]
        cluster.images = list(extra.get("images") or [])  # type: ignore[call-overload]
        cluster.timings = dict(extra.get("timings") or {})  # type: ignore[call-overload]
        return cluster

    def status(self) -> dict[str, Any]:
        """Process liveness and the node's readiness, for ``python -m tests.lab status``."""
        alive = {name: p.alive() for name, p in self.procs.items()}
        ready = all(alive.values()) and self._node_ready()
        return {
            "server": self.server,
            "kubeconfig": str(self.kubeconfig),
            "node": self.node,
            "node_ready": ready,
            "pod_network": self.subnet,
            "cluster_dns": self.gateway,
            "alive": alive,
        }

    # ------------------------------------------------------------- for tests
    def pod_memory_peak(self, pod: Any) -> int | None:
        """A running or finished pod's peak memory in bytes, all its containers together, from the
        cgroup the kubelet made for it under this cluster's cgroupRoot (None when it is gone)."""
        uid, qos = pod.metadata.uid, str((pod.status and pod.status.qos_class) or "").lower()
        kubepods = CGROUP_ROOT / "memory" / self.cgroup_root.lstrip("/") / "kubepods"
        folder = kubepods / f"pod{uid}" if qos == "guaranteed" else kubepods / qos / f"pod{uid}"
        try:
            return int((folder / "memory.max_usage_in_bytes").read_text())
        except (OSError, ValueError):
            return None

    def audit_events(self, username: str = iam_authenticator.USERNAME) -> list[dict[str, Any]]:
        """The API server's audit events of ``username`` so far (the audit policy records only the
        user aws-iam-authenticator maps the Airflow role to)."""
        log = self.dir / "logs" / "audit.log"
        if not log.exists():
            return []
        events = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
        return [e for e in events if e.get("user", {}).get("username") == username]

    def airflow_connection(self, namespace: str = NAMESPACE) -> str:
        """An Airflow Kubernetes connection (as ``AIRFLOW_CONN_...`` JSON) whose kubeconfig is
        Airflow's identity: group ``ecr-promoters``, bound to exactly the README's Role."""
        kubeconfig = self.dir / "airflow.kubeconfig"
        extra = {"kube_config_path": str(kubeconfig), "namespace": namespace, "in_cluster": False}
        return json.dumps({"conn_type": "kubernetes", "extra": extra})


def readme_rbac(namespace: str = NAMESPACE) -> list[dict[str, Any]]:
    """The Role and RoleBinding the README documents for Airflow's identity, in ``namespace``:
    the lab applies exactly those, so a verb the operator needs and the README lacks fails a test."""
    import textwrap

    import yaml

    for block in README.read_text().split("```yaml\n")[1:]:
        text = textwrap.dedent(block.split("```")[0])
        if "kind: Role\n" in text and "kind: RoleBinding" in text:
            items = [item for item in yaml.safe_load_all(text) if item]
            for item in items:
                item["metadata"]["namespace"] = namespace
            return items
    raise LabError(f"no Role and RoleBinding in a yaml block of {README}")


def _rmdir(path: Path) -> bool:
    try:
        path.rmdir()
        return True
    except OSError:
        return not path.exists()


def _unmount_under(prefixes: list[str], errors: list[str], what: str) -> None:
    """Unmount everything mounted under ``prefixes``, deepest first (container rootfs, the
    kubelet's tmpfs volumes, the network namespaces containerd keeps); lazily when busy."""
    for _ in range(3):
        mounts = []
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            point = line.split()[4].replace("\\040", " ")
            if point.startswith(tuple(prefixes)):
                mounts.append(point)
        if not mounts:
            return
        for point in sorted(mounts, key=len, reverse=True):
            subprocess.run(["umount", point], capture_output=True, check=False, timeout=30)
    left = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    stuck = [m for m in left if m.startswith(tuple(prefixes))]
    for point in sorted(stuck, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False, timeout=30)
    if stuck:
        errors.append(f"lazily unmounted {len(stuck)} busy mounts under {what}")


def _cgroup_hierarchies() -> list[Path]:
    """Every mounted cgroup hierarchy (cgroup v1: one per controller, and the unified one)."""
    return [h for h in sorted(CGROUP_ROOT.iterdir()) if not h.is_symlink() and os.path.ismount(h)]


@contextmanager
def _shared_lock() -> Iterator[None]:
    """Hold the lock of ``SHARED`` (the last cluster to stop removes the folder, lock and all: a
    lock taken on a file since unlinked is taken again)."""
    while True:
        SHARED.mkdir(parents=True, exist_ok=True)
        lock = SHARED / ".lock"
        with open(lock, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                if os.fstat(handle.fileno()).st_ino != lock.stat().st_ino:
                    continue
            except FileNotFoundError:
                continue
            yield
            return


def _created_host_paths() -> list[str]:
    """The shared host paths lab clusters created (under the lock)."""
    try:
        return [str(p) for p in json.loads((SHARED / "created.json").read_text())]
    except (FileNotFoundError, ValueError):
        return []


def _processes() -> Iterator[tuple[int, list[str]]]:
    """(pid, argv) of every process that is running and has an argv."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if argv and argv[0]:
            yield int(entry.name), argv


def _kubelets(besides: Path) -> list[str]:
    """Running kubelets but the one of ``besides`` (a cluster's run folder): lab clusters of code
    without markers, or a kubelet of the machine's own, use the shared host paths too."""
    return [
        f"kubelet pid {pid}"
        for pid, argv in _processes()
        if Path(argv[0]).name == "kubelet" and f"--root-dir={besides / 'kubelet'}" not in argv
    ]


def _running_clusters() -> list[str]:
    """The other lab clusters' markers whose cluster still runs (under the lock); a marker left by
    one that died without its teardown is removed."""
    running = []
    for marker in sorted(SHARED.glob("*.json")):
        if marker.name == "created.json":
            continue
        try:
            record = json.loads(marker.read_text())
            state, starter = Path(record["state"]), int(record["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            marker.unlink(missing_ok=True)
            continue
        try:
            recorded = procs.load(state)[0] if state.exists() else []
        except (OSError, ValueError, KeyError, TypeError):
            recorded = []
        alive = state.exists() and (Path(f"/proc/{starter}").exists() or any(p.alive() for p in recorded))
        if alive:
            running.append(marker.stem)
        else:
            marker.unlink(missing_ok=True)
    return running
