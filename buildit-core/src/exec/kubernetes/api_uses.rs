//! Every call the Kubernetes executor makes to the cluster's API, by resource and verb: what its RBAC role
//! must grant (`deploy/kubernetes/` is checked against it), and nothing more.

/// One resource the executor uses and the verbs it calls on it, in its namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiUse {
    /// The API group (`""`: the core group).
    pub group: &'static str,
    /// The resource, with its subresource after a slash (`pods/log`).
    pub resource: &'static str,
    /// The verbs.
    pub verbs: &'static [&'static str],
}

/// What the executor calls: Jobs for attempts (created, read when their pod goes, listed and deleted by
/// sweeps), their Pods (watched, read, deleted when a cancel finds one left, and their logs), the Secret
/// of an attempt (created, made owned by its Job, listed and deleted by sweeps), the Events of a Job that
/// has no pod (the cluster refusing to create it), and a run's workspace: its claim (created, listed and
/// deleted), the pod that holds it (created, and files copied through `pods/exec`: a WebSocket `GET` that
/// clusters since 1.30 also authorise as `create`) and the Secret its source's URL is in (created, deleted).
pub const KUBERNETES_API_USES: &[ApiUse] = &[
    ApiUse {
        group: "batch",
        resource: "jobs",
        verbs: &["create", "get", "list", "delete"],
    },
    ApiUse {
        group: "",
        resource: "pods",
        verbs: &["create", "get", "list", "watch", "delete"],
    },
    ApiUse {
        group: "",
        resource: "pods/log",
        verbs: &["get"],
    },
    ApiUse {
        group: "",
        resource: "secrets",
        verbs: &["create", "list", "patch", "delete"],
    },
    ApiUse {
        group: "",
        resource: "events",
        verbs: &["list"],
    },
    ApiUse {
        group: "",
        resource: "pods/exec",
        verbs: &["create", "get"],
    },
    ApiUse {
        group: "",
        resource: "persistentvolumeclaims",
        verbs: &["create", "list", "delete"],
    },
];
