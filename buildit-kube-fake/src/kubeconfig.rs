//! The kubeconfig that points clients (kubectl, kube-rs) at a fake cluster.

use std::path::Path;

/// The name of the context, cluster and user the kubeconfig defines.
pub const CONTEXT_NAME: &str = "buildit-fake";

/// The kubeconfig text for a server at `url`, with `namespace` as the context's namespace. The token is a
/// dummy: the fake checks no credentials.
pub fn kubeconfig_text(url: &str, namespace: &str) -> String {
    format!(
        "apiVersion: v1\n\
         kind: Config\n\
         clusters:\n\
         - name: {CONTEXT_NAME}\n  cluster:\n    server: {url}\n\
         users:\n\
         - name: {CONTEXT_NAME}\n  user:\n    token: buildit-fake-token\n\
         contexts:\n\
         - name: {CONTEXT_NAME}\n  context:\n    cluster: {CONTEXT_NAME}\n    user: {CONTEXT_NAME}\n    namespace: {namespace}\n\
         current-context: {CONTEXT_NAME}\n\
         preferences: {{}}\n"
    )
}

/// Writes the kubeconfig to `path` (readable by its owner only, as kubeconfigs should be).
pub fn write_kubeconfig(path: &Path, url: &str, namespace: &str) -> std::io::Result<()> {
    std::fs::write(path, kubeconfig_text(url, namespace))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}
