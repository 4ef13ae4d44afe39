//! Configuration files of the cluster's node components, every path under the
//! cluster's directory. The settings that are not defaults were each needed on
//! the project's machines (see the comments).

use std::path::Path;

/// Pod addresses (the node's allocated range is the first /24).
pub const CLUSTER_CIDR: &str = "10.244.0.0/16";
pub const POD_SUBNET: &str = "10.244.0.0/24";
pub const SERVICE_CIDR: &str = "10.96.0.0/16";
/// The `kubernetes` Service's address (first of the range).
pub const API_SERVICE_IP: &str = "10.96.0.1";
pub const DNS_SERVICE_IP: &str = "10.96.0.10";
pub const API_PORT: u16 = 6443;
pub const BRIDGE: &str = "msp-br0";

fn p(path: &Path) -> String {
    path.display().to_string()
}

/// containerd's CRI configuration.
pub fn containerd(root: &Path, sandbox_image: &str) -> String {
    format!(
        r#"version = 2
root = "{root}/containerd/root"
state = "{root}/containerd/state"
[grpc]
  address = "{root}/run/containerd.sock"
[ttrpc]
  address = "{root}/run/containerd-ttrpc.sock"
[debug]
  address = "{root}/run/containerd-debug.sock"
[plugins."io.containerd.grpc.v1.cri"]
  # Nothing can be pulled: the pause image is imported beforehand.
  sandbox_image = "{sandbox_image}"
  enable_cdi = false
  # Pod network namespaces as files under the state dir, not /var/run/netns.
  netns_mounts_under_state_dir = true
  # Without CAP_SYS_RESOURCE runc cannot set the oom_score_adj kubelet asks
  # for (-998) and every sandbox fails; this clamps it to ours.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "/usr/sbin/runc"
        Root = "{root}/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{root}/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = ""
"#,
        root = p(root)
    )
}

/// The pod network: one bridge with host-local addresses from the node's range.
pub fn cni(root: &Path) -> String {
    serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "msp-cluster",
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": true,
                "ipMasq": true,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": POD_SUBNET}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": p(&root.join("cni/ipam")),
                }
            },
            {"type": "portmap", "capabilities": {"portMappings": true}}
        ]
    })
    .to_string()
}

/// kubelet's configuration file.
pub fn kubelet(root: &Path) -> String {
    format!(
        r#"apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
authentication:
  anonymous: {{enabled: false}}
  webhook: {{enabled: true}}
  x509: {{clientCAFile: {root}/pki/ca.crt}}
authorization: {{mode: Webhook}}
# The machines have cgroup v1; 1.34 refuses it unless told otherwise.
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix://{root}/run/containerd.sock
tlsCertFile: {root}/pki/kubelet.crt
tlsPrivateKeyFile: {root}/pki/kubelet.key
clusterDNS: [{DNS_SERVICE_IP}]
clusterDomain: cluster.local
# No upstream resolver: nothing leaves the cluster's namespace.
resolvConf: {root}/resolv.conf
podLogsDir: {root}/pod-logs
healthzBindAddress: 127.0.0.1
address: 0.0.0.0
readOnlyPort: 0
serializeImagePulls: false
maxPods: 50
# The machine's disk is shared with builds: evicting the tests' pods for the
# machine's free space would fail them for nothing of theirs. Absolute
# thresholds: 1% of a 250 GB disk (2.5 GB) was crossed by other builds and
# evicted every pod, while the tests' pods write a few KiB.
evictionHard: {{memory.available: 100Mi, nodefs.available: 256Mi, imagefs.available: 256Mi, nodefs.inodesFree: 1%}}
# Images cannot be pulled back once collected.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
volumePluginDir: {root}/kubelet-plugins/volume/exec
"#,
        root = p(root)
    )
}

/// kube-proxy's configuration file.
pub fn kube_proxy(root: &Path, node: &str) -> String {
    format!(
        r#"apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {{kubeconfig: {root}/kube-proxy.kubeconfig}}
mode: iptables
clusterCIDR: {CLUSTER_CIDR}
hostnameOverride: {node}
metricsBindAddress: 127.0.0.1:10249
healthzBindAddress: 127.0.0.1:10256
# Zero: leave the machine-wide conntrack sysctls alone.
conntrack:
  maxPerCore: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
"#,
        root = p(root)
    )
}

/// The resolver file kubelet gives pods with `dnsPolicy: Default`: none.
pub const RESOLV_CONF: &str =
    "# msp test cluster: no upstream resolver, names outside the cluster do not resolve\n";

/// CoreDNS answering for cluster.local at the kube-dns Service. No `forward`
/// plugin: a query for any other name is not sent anywhere.
pub fn coredns(image: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: ServiceAccount
metadata: {{name: coredns, namespace: kube-system}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {{name: "system:coredns"}}
rules:
- apiGroups: [""]
  resources: [endpoints, services, pods, namespaces]
  verbs: [list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {{name: "system:coredns"}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:coredns"}}
subjects: [{{kind: ServiceAccount, name: coredns, namespace: kube-system}}]
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: coredns, namespace: kube-system}}
data:
  Corefile: |
    .:53 {{
        errors
        health :8080
        ready :8181
        kubernetes cluster.local in-addr.arpa ip6.arpa {{
           pods insecure
           fallthrough in-addr.arpa ip6.arpa
        }}
        cache 30
    }}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: coredns, namespace: kube-system, labels: {{k8s-app: kube-dns}}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{k8s-app: kube-dns}}}}
  template:
    metadata: {{labels: {{k8s-app: kube-dns}}}}
    spec:
      serviceAccountName: coredns
      dnsPolicy: Default
      containers:
      - name: coredns
        image: {image}
        imagePullPolicy: Never
        args: ["-conf", "/etc/coredns/Corefile"]
        ports:
        - {{containerPort: 53, name: dns, protocol: UDP}}
        - {{containerPort: 53, name: dns-tcp, protocol: TCP}}
        readinessProbe: {{httpGet: {{path: /ready, port: 8181}}, periodSeconds: 2}}
        volumeMounts: [{{name: config, mountPath: /etc/coredns, readOnly: true}}]
      volumes:
      - name: config
        configMap: {{name: coredns}}
---
apiVersion: v1
kind: Service
metadata: {{name: kube-dns, namespace: kube-system, labels: {{k8s-app: kube-dns}}}}
spec:
  selector: {{k8s-app: kube-dns}}
  clusterIP: {DNS_SERVICE_IP}
  ports:
  - {{name: dns, port: 53, protocol: UDP}}
  - {{name: dns-tcp, port: 53, protocol: TCP}}
"#
    )
}
