//! What a fake cluster is started with.

/// Options of a fake cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeOptions {
    /// The image of each pod's sandbox container (it only sleeps; its network namespace is the pod's).
    pub pause_image: String,
    /// The fake node's allocatable CPU, in millicores.
    pub node_cpu_millis: u64,
    /// The fake node's allocatable memory, in bytes.
    pub node_memory_bytes: u64,
    /// The address to listen on (loopback, port 0: any free port).
    pub listen: std::net::SocketAddr,
    /// The Docker Engine (`unix:///var/run/docker.sock`, ...); `None`: `DOCKER_HOST`, else the local socket.
    pub docker_host: Option<String>,
}

impl Default for FakeOptions {
    fn default() -> Self {
        FakeOptions {
            pause_image: "buildit-test/busybox:latest".to_owned(),
            node_cpu_millis: 4_000,
            node_memory_bytes: 8 * 1024 * 1024 * 1024,
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            docker_host: None,
        }
    }
}
