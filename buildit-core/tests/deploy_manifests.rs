//! `deploy/kubernetes/`: every manifest parses into its k8s-openapi type with no field lost, and the objects fit
//! together: one namespace, the executor's Role exactly as `KUBERNETES_API_USES`, the daemon's configuration as
//! BuildIt reads it, the database's password only through its Secret, and source links that stage pods reach.
//! Each check is also shown to fail on a manifest broken on purpose.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use buildit_core::exec::KUBERNETES_API_USES;
use buildit_core::system::{ExecutorConfig, StoreConfig, SystemConfig, parse_system};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, EnvVar, Namespace, PodSpec, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::{Metadata, NamespaceResourceScope, Resource};
use serde::Deserialize;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// The namespace of everything.
const NAMESPACE: &str = "buildit";
/// The PostgreSQL database and user.
const DATABASE: &str = "buildit";
/// The Role the executor's calls need.
const ROLE: &str = "buildit-executor";
/// The daemon's default drain window (`buildit daemon --drain`), in seconds.
const DEFAULT_DRAIN_SECONDS: i64 = 30;

fn manifest_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes")
}

/// One YAML document of one file, as JSON.
#[derive(Debug, Clone)]
struct Document {
    file: String,
    index: usize,
    value: Value,
}

impl Document {
    fn at(&self) -> String {
        format!("{} (document {})", self.file, self.index + 1)
    }

    fn kind(&self) -> &str {
        self.value.get("kind").and_then(Value::as_str).unwrap_or("")
    }

    fn name(&self) -> &str {
        self.value
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
    }
}

/// Every document of every `*.yaml` file of `dir`, in file order.
fn read_documents(dir: &Path) -> Result<Vec<Document>, String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| e.to_string())?.path();
        if path.extension().is_some_and(|ext| ext == "yaml") {
            files.push(path);
        }
    }
    files.sort();
    let mut documents = Vec::new();
    for path in files {
        let file = path
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        let text = std::fs::read_to_string(&path).map_err(|e| format!("{file}: {e}"))?;
        // One document per `---`, as kubectl splits them.
        for (index, document) in serde_norway::Deserializer::from_str(&text).enumerate() {
            let value = Value::deserialize(document)
                .map_err(|e| format!("{file} (document {}): {e}", index + 1))?;
            if !value.is_null() {
                documents.push(Document {
                    file: file.clone(),
                    index,
                    value,
                });
            }
        }
    }
    Ok(documents)
}

/// The objects of the manifests, by kind.
#[derive(Debug, Default)]
struct Manifests {
    /// Every `*.yaml` file.
    files: BTreeSet<String>,
    /// `kustomization.yaml`'s `resources`.
    kustomization: Option<Vec<String>>,
    namespaces: Vec<Namespace>,
    secrets: Vec<Secret>,
    services: Vec<Service>,
    config_maps: Vec<ConfigMap>,
    service_accounts: Vec<ServiceAccount>,
    roles: Vec<Role>,
    role_bindings: Vec<RoleBinding>,
    stateful_sets: Vec<StatefulSet>,
    deployments: Vec<Deployment>,
    /// Namespaced objects, as `kind/name` and their namespace.
    namespaced: Vec<(String, Option<String>)>,
}

/// Parses `document` as `K`, and refuses it if serialising it again loses or changes anything: a misspelt or
/// misplaced field is dropped by k8s-openapi's types, and shows here.
fn typed<K>(
    document: &Document,
    namespaced: &mut Vec<(String, Option<String>)>,
) -> Result<K, String>
where
    K: Resource + Metadata<Ty = ObjectMeta> + DeserializeOwned + Serialize,
    K::Scope: 'static,
{
    let object: K = serde_json::from_value(document.value.clone())
        .map_err(|e| format!("{}: not a valid {}: {e}", document.at(), K::KIND))?;
    let again = serde_json::to_value(&object).map_err(|e| format!("{}: {e}", document.at()))?;
    let mut changed = Vec::new();
    differences(&document.value, &again, "", &mut changed);
    if !changed.is_empty() {
        return Err(format!(
            "{}: {} `{}` has fields that {} does not know or reads differently: {}",
            document.at(),
            K::KIND,
            document.name(),
            K::API_VERSION,
            changed.join(", ")
        ));
    }
    if std::any::TypeId::of::<K::Scope>() == std::any::TypeId::of::<NamespaceResourceScope>() {
        namespaced.push((
            format!("{}/{}", K::KIND, document.name()),
            object.metadata().namespace.clone(),
        ));
    }
    Ok(object)
}

/// Where `written` and `parsed` differ, as JSON pointers.
fn differences(written: &Value, parsed: &Value, at: &str, out: &mut Vec<String>) {
    match (written, parsed) {
        (Value::Object(a), Value::Object(b)) => {
            for key in a.keys().chain(b.keys().filter(|key| !a.contains_key(*key))) {
                let here = format!("{at}/{key}");
                match (a.get(key), b.get(key)) {
                    (Some(x), Some(y)) => differences(x, y, &here, out),
                    (Some(_), None) => out.push(format!("`{here}` is not a field")),
                    (None, _) => out.push(format!("`{here}` appears")),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (index, (x, y)) in a.iter().zip(b).enumerate() {
                differences(x, y, &format!("{at}/{index}"), out);
            }
        }
        _ if written == parsed => {}
        _ => out.push(format!("`{at}` reads as {parsed} rather than {written}")),
    }
}

impl Manifests {
    fn load() -> Result<Self, Vec<String>> {
        Self::from_documents(read_documents(&manifest_dir()).map_err(|e| vec![e])?)
    }

    fn from_documents(documents: Vec<Document>) -> Result<Self, Vec<String>> {
        let mut m = Manifests::default();
        let mut problems = Vec::new();
        for document in &documents {
            m.files.insert(document.file.clone());
            let api_version = document.value.get("apiVersion").and_then(Value::as_str);
            let n = &mut m.namespaced;
            let parsed = match (api_version.unwrap_or(""), document.kind()) {
                ("kustomize.config.k8s.io/v1beta1", "Kustomization") => {
                    kustomization(document).map(|resources| m.kustomization = Some(resources))
                }
                (_, "Namespace") => typed(document, n).map(|o| m.namespaces.push(o)),
                (_, "Secret") => typed(document, n).map(|o| m.secrets.push(o)),
                (_, "Service") => typed(document, n).map(|o| m.services.push(o)),
                (_, "ConfigMap") => typed(document, n).map(|o| m.config_maps.push(o)),
                (_, "ServiceAccount") => typed(document, n).map(|o| m.service_accounts.push(o)),
                (_, "Role") => typed(document, n).map(|o| m.roles.push(o)),
                (_, "RoleBinding") => typed(document, n).map(|o| m.role_bindings.push(o)),
                (_, "StatefulSet") => typed(document, n).map(|o| m.stateful_sets.push(o)),
                (_, "Deployment") => typed(document, n).map(|o| m.deployments.push(o)),
                (_, kind @ ("ClusterRole" | "ClusterRoleBinding")) => Err(format!(
                    "{}: a {kind}: the executor's rights are in its namespace only",
                    document.at()
                )),
                (_, kind) => Err(format!("{}: unknown kind `{kind}`", document.at())),
            };
            if let Err(problem) = parsed {
                problems.push(problem);
            }
        }
        if problems.is_empty() {
            Ok(m)
        } else {
            Err(problems)
        }
    }

    fn deployment(&self) -> Result<&Deployment, String> {
        match self.deployments.as_slice() {
            [deployment] => Ok(deployment),
            other => Err(format!("{} Deployments, one expected", other.len())),
        }
    }

    /// The daemon's pod and its container (the one that runs `buildit daemon`).
    fn daemon(&self) -> Result<(&PodSpec, &Container), String> {
        let pod = pod_spec(self.deployment()?.spec.as_ref().map(|s| &s.template))?;
        let container = pod
            .containers
            .iter()
            .find(|c| {
                c.command
                    .as_deref()
                    .unwrap_or_default()
                    .get(1)
                    .map(String::as_str)
                    == Some("daemon")
            })
            .ok_or("no container of the Deployment runs `buildit daemon`")?;
        Ok((pod, container))
    }

    fn postgres(&self) -> Result<&Container, String> {
        let [stateful_set] = self.stateful_sets.as_slice() else {
            return Err(format!(
                "{} StatefulSets, one expected",
                self.stateful_sets.len()
            ));
        };
        let pod = pod_spec(stateful_set.spec.as_ref().map(|s| &s.template))?;
        pod.containers
            .iter()
            .find(|c| {
                c.image
                    .as_deref()
                    .is_some_and(|i| i.starts_with("postgres:"))
            })
            .ok_or_else(|| "the StatefulSet runs no `postgres` image".to_owned())
    }

    /// The ConfigMap's `buildit-system.kdl` that the daemon reads (through `BUILDIT_SYSTEM` and its mount).
    fn system_text(&self) -> Result<&str, String> {
        let (pod, daemon) = self.daemon()?;
        let path = env_value(daemon, "BUILDIT_SYSTEM").ok_or(
            "the daemon has no literal `BUILDIT_SYSTEM`: it would not find its configuration",
        )?;
        let (dir, key) = path
            .rsplit_once('/')
            .ok_or("`BUILDIT_SYSTEM` is not a path")?;
        let mount = daemon
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| m.mount_path.trim_end_matches('/') == dir)
            .ok_or_else(|| format!("nothing is mounted at `{dir}`"))?;
        let volume = pod
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == mount.name)
            .and_then(|v| v.config_map.as_ref())
            .ok_or_else(|| format!("the volume at `{dir}` is not a ConfigMap"))?;
        self.config_maps
            .iter()
            .find(|c| c.metadata.name.as_deref() == Some(volume.name.as_str()))
            .and_then(|c| c.data.as_ref()?.get(key))
            .map(String::as_str)
            .ok_or_else(|| format!("no ConfigMap `{}` with a key `{key}`", volume.name))
    }

    /// The daemon's system configuration, parsed as BuildIt parses it; any diagnostic, even a warning, fails.
    fn system(&self) -> Result<SystemConfig, String> {
        let text = self.system_text()?;
        match parse_system(text, "buildit-system.kdl") {
            Ok(system) if system.warnings.is_empty() => Ok(system),
            Ok(system) => Err(format!(
                "the ConfigMap's KDL has warnings: {:?}",
                system.warnings
            )),
            Err(error) => Err(format!(
                "the ConfigMap's KDL does not parse: {:?}",
                error.diagnostics
            )),
        }
    }
}

fn kustomization(document: &Document) -> Result<Vec<String>, String> {
    let resources = document.value.get("resources").and_then(Value::as_array);
    let resources = resources.ok_or_else(|| format!("{}: no `resources` list", document.at()))?;
    resources
        .iter()
        .map(|r| {
            r.as_str()
                .map(str::to_owned)
                .ok_or_else(|| format!("{}: a resource that is not a file name", document.at()))
        })
        .collect()
}

fn pod_spec(
    template: Option<&k8s_openapi::api::core::v1::PodTemplateSpec>,
) -> Result<&PodSpec, String> {
    template
        .and_then(|t| t.spec.as_ref())
        .ok_or_else(|| "a workload without a pod spec".to_owned())
}

fn env<'c>(container: &'c Container, name: &str) -> Option<&'c EnvVar> {
    container.env.iter().flatten().find(|e| e.name == name)
}

fn env_value<'c>(container: &'c Container, name: &str) -> Option<&'c str> {
    env(container, name)?.value.as_deref()
}

/// The Secret and key an environment variable comes from.
fn secret_ref(container: &Container, name: &str) -> Option<(String, String)> {
    let source = env(container, name)?
        .value_from
        .as_ref()?
        .secret_key_ref
        .as_ref()?;
    Some((source.name.clone(), source.key.clone()))
}

/// A PostgreSQL URL's parts: `postgres://USER@HOST:PORT/DATABASE?password={env.NAME}`.
#[derive(Debug, PartialEq)]
struct PostgresUrl {
    user: String,
    password_in_userinfo: bool,
    host: String,
    port: Option<u16>,
    database: String,
    query: BTreeMap<String, String>,
}

fn postgres_url(url: &str) -> Result<PostgresUrl, String> {
    let rest = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))
        .ok_or_else(|| format!("`{url}` is not a literal `postgres://` URL"))?;
    let (base, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (authority, database) = base.split_once('/').unwrap_or((base, ""));
    let (userinfo, hostport) = authority.rsplit_once('@').unwrap_or(("", authority));
    let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
    let (host, port) = match hostport.split_once(':') {
        Some((host, port)) => (
            host,
            Some(port.parse().map_err(|_| format!("port `{port}`"))?),
        ),
        None => (hostport, None),
    };
    let query = query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k.to_owned(), v.to_owned())
        })
        .collect();
    Ok(PostgresUrl {
        user: user.to_owned(),
        password_in_userinfo: !password.is_empty(),
        host: host.to_owned(),
        port,
        database: database.to_owned(),
        query,
    })
}

// ---- the checks: each returns what is wrong ----

/// `kustomization.yaml` lists every other manifest, once.
fn check_kustomization(m: &Manifests) -> Vec<String> {
    let Some(resources) = &m.kustomization else {
        return vec!["no kustomization.yaml: `kubectl apply -k` would not work".to_owned()];
    };
    let listed: BTreeSet<String> = resources.iter().cloned().collect();
    let mut expected = m.files.clone();
    expected.remove("kustomization.yaml");
    let mut problems = Vec::new();
    if listed.len() != resources.len() {
        problems.push("kustomization.yaml lists a file twice".to_owned());
    }
    if listed != expected {
        problems.push(format!(
            "kustomization.yaml lists {listed:?}, the manifests are {expected:?}"
        ));
    }
    problems
}

/// One Namespace, `buildit`, and every namespaced object in it (written out, not left to the context).
fn check_namespaces(m: &Manifests) -> Vec<String> {
    let mut problems = Vec::new();
    let names: Vec<_> = m
        .namespaces
        .iter()
        .map(|n| n.metadata.name.clone())
        .collect();
    if names != [Some(NAMESPACE.to_owned())] {
        problems.push(format!(
            "the Namespaces are {names:?}, `{NAMESPACE}` alone expected"
        ));
    }
    for (object, namespace) in &m.namespaced {
        if namespace.as_deref() != Some(NAMESPACE) {
            problems.push(format!(
                "{object} is in namespace {namespace:?}, not `{NAMESPACE}`"
            ));
        }
    }
    problems
}

/// The Role grants each (group, resource, verb) of `KUBERNETES_API_USES`, and nothing else.
fn check_role(m: &Manifests) -> Vec<String> {
    let mut problems = Vec::new();
    let [role] = m.roles.as_slice() else {
        return vec![format!("{} Roles, `{ROLE}` alone expected", m.roles.len())];
    };
    if role.metadata.name.as_deref() != Some(ROLE) {
        problems.push(format!(
            "the Role is {:?}, not `{ROLE}`",
            role.metadata.name
        ));
    }
    let mut granted = BTreeSet::new();
    for rule in role.rules.iter().flatten() {
        if rule.resource_names.is_some() || rule.non_resource_urls.is_some() {
            problems.push(format!(
                "a rule with resourceNames or nonResourceURLs: {rule:?}"
            ));
        }
        let groups = rule.api_groups.clone().unwrap_or_default();
        let resources = rule.resources.clone().unwrap_or_default();
        for group in &groups {
            for resource in &resources {
                for verb in &rule.verbs {
                    if [group, resource, verb].iter().any(|s| s.contains('*')) {
                        problems.push(format!("a wildcard: ({group:?}, {resource}, {verb})"));
                    }
                    granted.insert((group.clone(), resource.clone(), verb.clone()));
                }
            }
        }
    }
    let used: BTreeSet<(String, String, String)> = KUBERNETES_API_USES
        .iter()
        .flat_map(|u| {
            u.verbs
                .iter()
                .map(|v| (u.group.to_owned(), u.resource.to_owned(), (*v).to_owned()))
        })
        .collect();
    for (group, resource, verb) in used.difference(&granted) {
        problems.push(format!(
            "the Role does not grant `{verb}` on {group:?} `{resource}`, which the executor calls"
        ));
    }
    for (group, resource, verb) in granted.difference(&used) {
        problems.push(format!(
            "the Role grants `{verb}` on {group:?} `{resource}`, which the executor never calls"
        ));
    }
    problems
}

/// The RoleBinding binds the Role to the daemon's ServiceAccount, which the Deployment uses; nothing is bound
/// to the stage pods' account, which mounts no token.
fn check_bindings(m: &Manifests) -> Vec<String> {
    let mut problems = Vec::new();
    let daemon_account = match m.daemon() {
        Ok((pod, _)) => pod.service_account_name.clone().unwrap_or_default(),
        Err(problem) => return vec![problem],
    };
    if !m
        .service_accounts
        .iter()
        .any(|a| a.metadata.name.as_deref() == Some(daemon_account.as_str()))
    {
        problems.push(format!(
            "the Deployment runs as `{daemon_account}`, which is no ServiceAccount of the manifests"
        ));
    }
    let [binding] = m.role_bindings.as_slice() else {
        return vec![format!(
            "{} RoleBindings, one expected",
            m.role_bindings.len()
        )];
    };
    let role_ref = &binding.role_ref;
    if (
        role_ref.api_group.as_str(),
        role_ref.kind.as_str(),
        role_ref.name.as_str(),
    ) != ("rbac.authorization.k8s.io", "Role", ROLE)
    {
        problems.push(format!(
            "the RoleBinding refers to {role_ref:?}, not the Role `{ROLE}`"
        ));
    }
    let subjects: Vec<_> = binding
        .subjects
        .iter()
        .flatten()
        .map(|s| (s.kind.clone(), s.name.clone(), s.namespace.clone()))
        .collect();
    let expected = vec![(
        "ServiceAccount".to_owned(),
        daemon_account.clone(),
        Some(NAMESPACE.to_owned()),
    )];
    if subjects != expected {
        problems.push(format!(
            "the RoleBinding binds {subjects:?}, not the daemon's ServiceAccount {expected:?}"
        ));
    }
    problems
}

/// The daemon's configuration parses, names the PostgreSQL store and the `kubernetes` executor in `buildit`,
/// whose stage pods' account exists, mounts no token and is bound to nothing.
fn check_system(m: &Manifests) -> Vec<String> {
    let system = match m.system() {
        Ok(system) => system,
        Err(problem) => return vec![problem],
    };
    let mut problems = Vec::new();
    if !matches!(system.store, StoreConfig::Postgres { .. }) {
        problems.push(format!(
            "the daemon's store is {:?}, not PostgreSQL",
            system.store
        ));
    }
    let kubernetes = system.executors.iter().find_map(|e| match e {
        ExecutorConfig::Kubernetes {
            namespace,
            service_account,
            ..
        } => Some((namespace, service_account)),
        _ => None,
    });
    let Some((namespace, service_account)) = kubernetes else {
        return vec!["the daemon's configuration has no `executor \"kubernetes\"`".to_owned()];
    };
    if namespace.as_deref() != Some(NAMESPACE) {
        problems.push(format!(
            "the executor's namespace is {namespace:?}, not `{NAMESPACE}` (where its Role is)"
        ));
    }
    let Some(stage_account) = service_account else {
        return vec!["the executor names no `service-account` for stage pods".to_owned()];
    };
    match m
        .service_accounts
        .iter()
        .find(|a| a.metadata.name.as_ref() == Some(stage_account))
    {
        None => problems.push(format!(
            "stage pods run as `{stage_account}`, which is no ServiceAccount of the manifests"
        )),
        Some(account) if account.automount_service_account_token != Some(false) => problems.push(
            format!("the stage pods' ServiceAccount `{stage_account}` mounts its token"),
        ),
        Some(_) => {}
    }
    let bound = m
        .role_bindings
        .iter()
        .flat_map(|b| b.subjects.iter().flatten());
    if bound.clone().any(|s| &s.name == stage_account) {
        problems.push(format!(
            "the stage pods' ServiceAccount `{stage_account}` is bound to a Role"
        ));
    }
    problems
}

/// PostgreSQL's database and user are `buildit`, and the daemon's URL names them, on a Service of the
/// StatefulSet.
fn check_database(m: &Manifests) -> Vec<String> {
    let mut problems = Vec::new();
    let postgres = match m.postgres() {
        Ok(container) => container,
        Err(problem) => return vec![problem],
    };
    for variable in ["POSTGRES_DB", "POSTGRES_USER"] {
        if env_value(postgres, variable) != Some(DATABASE) {
            problems.push(format!(
                "PostgreSQL's `{variable}` is {:?}, not `{DATABASE}`",
                env_value(postgres, variable)
            ));
        }
    }
    let system = match m.system() {
        Ok(system) => system,
        Err(problem) => return vec![problem],
    };
    let StoreConfig::Postgres { url } = &system.store else {
        return vec!["the daemon's store is not PostgreSQL".to_owned()];
    };
    let url = match postgres_url(url.as_str()) {
        Ok(url) => url,
        Err(problem) => return vec![problem],
    };
    if url.user != DATABASE || url.database != DATABASE {
        problems.push(format!(
            "the daemon connects as `{}` to `{}`, not `{DATABASE}` to `{DATABASE}`",
            url.user, url.database
        ));
    }
    let service_name = url.host.split('.').next().unwrap_or_default();
    let namespace_ok = match url.host.split('.').nth(1) {
        None => true,
        Some(namespace) => namespace == NAMESPACE,
    };
    let service = m
        .services
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some(service_name));
    let port = i32::from(url.port.unwrap_or(5432));
    match service.and_then(|s| s.spec.as_ref()) {
        Some(spec) if namespace_ok && spec.ports.iter().flatten().any(|p| p.port == port) => {
            let selector = spec.selector.clone().unwrap_or_default();
            let labels = m.stateful_sets[0]
                .spec
                .as_ref()
                .and_then(|s| s.template.metadata.as_ref()?.labels.clone())
                .unwrap_or_default();
            if selector.is_empty() || !selector.iter().all(|(k, v)| labels.get(k) == Some(v)) {
                problems.push(format!(
                    "the Service `{service_name}` does not select PostgreSQL's pod"
                ));
            }
        }
        _ => problems.push(format!(
            "the daemon's URL names `{}:{port}`, which is no Service of the manifests",
            url.host
        )),
    }
    problems
}

/// The daemon's password comes from PostgreSQL's Secret by `secretKeyRef`, and is written nowhere else.
fn check_password(m: &Manifests) -> Vec<String> {
    let mut problems = Vec::new();
    let (postgres, daemon, system) = match (m.postgres(), m.daemon(), m.system()) {
        (Ok(postgres), Ok((_, daemon)), Ok(system)) => (postgres, daemon, system),
        (Err(problem), _, _) | (_, Err(problem), _) | (_, _, Err(problem)) => return vec![problem],
    };
    let Some((secret_name, key)) = secret_ref(postgres, "POSTGRES_PASSWORD") else {
        return vec!["PostgreSQL's `POSTGRES_PASSWORD` is not from a Secret".to_owned()];
    };
    let secret = m
        .secrets
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some(secret_name.as_str()));
    let password = secret.and_then(|s| {
        let text = s.string_data.as_ref().and_then(|d| d.get(&key).cloned());
        text.or_else(|| Some(String::from_utf8_lossy(&s.data.as_ref()?.get(&key)?.0).into_owned()))
    });
    let Some(password) = password else {
        return vec![format!("no Secret `{secret_name}` with a key `{key}`")];
    };
    let StoreConfig::Postgres { url } = &system.store else {
        return vec!["the daemon's store is not PostgreSQL".to_owned()];
    };
    let parsed = match postgres_url(url.as_str()) {
        Ok(parsed) => parsed,
        Err(problem) => return vec![problem],
    };
    if parsed.password_in_userinfo {
        problems.push("the daemon's URL has a password in it".to_owned());
    }
    let variable = parsed
        .query
        .get("password")
        .and_then(|v| v.strip_prefix("{env.")?.strip_suffix('}'));
    match variable {
        None => problems.push(format!(
            "the daemon's URL takes no `password={{env.NAME}}`: {:?}",
            parsed.query
        )),
        Some(variable) => {
            if secret_ref(daemon, variable) != Some((secret_name.clone(), key.clone())) {
                problems.push(format!(
                    "the daemon's `{variable}` is not from the Secret `{secret_name}`, key `{key}`, by secretKeyRef"
                ));
            }
        }
    }
    let written = m
        .deployment()
        .ok()
        .and_then(|d| serde_json::to_string(d).ok());
    if password.len() >= 4 && written.is_some_and(|text| text.contains(&password)) {
        problems.push("the Deployment has the database's password written in it".to_owned());
    }
    let (pod, _) = match m.daemon() {
        Ok(found) => found,
        Err(problem) => return vec![problem],
    };
    for container in pod
        .containers
        .iter()
        .chain(pod.init_containers.iter().flatten())
    {
        for variable in container.env.iter().flatten() {
            if variable.name.contains("PASSWORD") && variable.value.is_some() {
                problems.push(format!(
                    "`{}` of container `{}` is a literal value",
                    variable.name, container.name
                ));
            }
        }
    }
    problems
}

/// The daemon listens on the port its probes (gRPC health) and Service use, outlives its drain window when
/// stopped, and can run with its root filesystem read-only: its data directory and `/tmp` are volumes.
fn check_daemon(m: &Manifests) -> Vec<String> {
    let (pod, daemon) = match m.daemon() {
        Ok(found) => found,
        Err(problem) => return vec![problem],
    };
    let mut problems = Vec::new();
    let command = daemon.command.clone().unwrap_or_default();
    let flag = |name: &str| flag_value(&command, name);
    let port: Option<i32> = flag("--listen").and_then(|l| l.rsplit_once(':')?.1.parse().ok());
    let Some(port) = port else {
        return vec![format!(
            "the daemon has no `--listen HOST:PORT`: {command:?}"
        )];
    };
    for (probe, which) in [
        (&daemon.readiness_probe, "readiness"),
        (&daemon.liveness_probe, "liveness"),
    ] {
        let grpc = probe.as_ref().and_then(|p| p.grpc.as_ref());
        if grpc.map(|g| g.port) != Some(port) {
            problems.push(format!(
                "the daemon's {which} probe is not gRPC health on {port}"
            ));
        }
    }
    let container_port = daemon
        .ports
        .iter()
        .flatten()
        .find(|p| p.container_port == port);
    let Some(container_port) = container_port else {
        return vec![format!(
            "the daemon's container does not declare port {port}"
        )];
    };
    let service = m
        .services
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some("buildit-daemon"));
    let targets = service
        .and_then(|s| s.spec.as_ref()?.ports.clone())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|p| p.target_port)
        .any(|target| match target {
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(n) => n == port,
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(name) => {
                container_port.name.as_deref() == Some(name.as_str())
            }
        });
    if !targets {
        problems.push(format!(
            "no Service `buildit-daemon` reaches the daemon's port {port}"
        ));
    }
    let drain = match flag("--drain") {
        None => Some(DEFAULT_DRAIN_SECONDS),
        Some(d) => d.strip_suffix('s').and_then(|s| s.parse().ok()),
    };
    let grace = pod.termination_grace_period_seconds;
    match (drain, grace) {
        (Some(drain), Some(grace)) if grace > drain + 1 => {}
        _ => problems.push(format!(
            "terminationGracePeriodSeconds {grace:?} is not longer than the drain window ({drain:?}s) and a second"
        )),
    }
    let security = daemon.security_context.as_ref();
    if security.and_then(|s| s.read_only_root_filesystem) != Some(true) {
        problems.push("the daemon's root filesystem is not read-only".to_owned());
    }
    let non_root = |s: Option<bool>| s == Some(true);
    if !non_root(security.and_then(|s| s.run_as_non_root))
        && !non_root(
            pod.security_context
                .as_ref()
                .and_then(|s| s.run_as_non_root),
        )
    {
        problems.push("the daemon is not made to run as a non-root user".to_owned());
    }
    let data_dir = flag("--data-dir").unwrap_or_default();
    for dir in [data_dir.as_str(), "/tmp"] {
        let mount = daemon
            .volume_mounts
            .iter()
            .flatten()
            .find(|v| v.mount_path == dir);
        let volume =
            mount.and_then(|mount| pod.volumes.iter().flatten().find(|v| v.name == mount.name));
        if volume.and_then(|v| v.empty_dir.as_ref()).is_none() {
            problems.push(format!("`{dir}` is not an emptyDir volume of the daemon"));
        }
    }
    problems
}

/// The value after `name` in `command`.
fn flag_value(command: &[String], name: &str) -> Option<String> {
    command
        .iter()
        .position(|arg| arg == name)
        .and_then(|i| command.get(i + 1))
        .cloned()
}

/// Stage pods reach the daemon's one-time source links: `--source-url` names the Service `buildit-daemon` of
/// the namespace, on a port of it that leads to the container port `--source-listen` listens on.
fn check_source_links(m: &Manifests) -> Vec<String> {
    let (_, daemon) = match m.daemon() {
        Ok(found) => found,
        Err(problem) => return vec![problem],
    };
    let command = daemon.command.clone().unwrap_or_default();
    let listen_port: Option<i32> = flag_value(&command, "--source-listen")
        .and_then(|listen| listen.rsplit_once(':')?.1.parse().ok());
    let Some(listen_port) = listen_port else {
        return vec![format!(
            "the daemon serves no source links (`--source-listen HOST:PORT`): {command:?}"
        )];
    };
    let Some(container_port) = daemon
        .ports
        .iter()
        .flatten()
        .find(|p| p.container_port == listen_port)
    else {
        return vec![format!(
            "the daemon's container does not declare its source links' port {listen_port}"
        )];
    };
    let Some(url) = flag_value(&command, "--source-url") else {
        return vec!["the daemon's source links have no `--source-url`: they would name the pod's own address".to_owned()];
    };
    let authority = url.strip_prefix("http://").unwrap_or_default();
    let (host, port) = authority.split_once(':').unwrap_or((authority, ""));
    let service_host = format!("buildit-daemon.{NAMESPACE}.svc");
    if host != service_host && host != format!("{service_host}.cluster.local") {
        return vec![format!(
            "the source links' URL `{url}` names no Service: `http://{service_host}:PORT` expected"
        )];
    }
    let Ok(port) = port.parse::<i32>() else {
        return vec![format!("the source links' URL `{url}` has no port")];
    };
    let leads_there = m
        .services
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some("buildit-daemon"))
        .and_then(|s| s.spec.as_ref()?.ports.clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|p| p.port == port)
        .filter_map(|p| p.target_port)
        .any(|target| match target {
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(n) => n == listen_port,
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(name) => {
                container_port.name.as_deref() == Some(name.as_str())
            }
        });
    if leads_there {
        Vec::new()
    } else {
        vec![format!(
            "no port {port} of the Service `buildit-daemon` leads to the source links' port {listen_port}"
        )]
    }
}

fn all_checks(m: &Manifests) -> Vec<String> {
    [
        check_kustomization,
        check_namespaces,
        check_role,
        check_bindings,
        check_system,
        check_database,
        check_password,
        check_daemon,
        check_source_links,
    ]
    .iter()
    .flat_map(|check| check(m))
    .collect()
}

#[test]
fn the_manifests_parse_and_fit_together() {
    let manifests = match Manifests::load() {
        Ok(manifests) => manifests,
        Err(problems) => panic!("the manifests do not parse:\n{}", problems.join("\n")),
    };
    let problems = all_checks(&manifests);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // Every kind that the executor's deployment needs is there.
    assert_eq!(manifests.deployments.len(), 1);
    assert_eq!(manifests.stateful_sets.len(), 1);
    assert_eq!(manifests.secrets.len(), 1);
    assert_eq!(manifests.config_maps.len(), 1);
    assert_eq!(manifests.services.len(), 2);
    assert_eq!(manifests.service_accounts.len(), 2);
}

// ---- each check fails on its mistake ----

/// Changes the document of `kind`/`name` with `change`, then reports what loading and checking find.
fn broken(kind: &str, name: &str, change: impl FnOnce(&mut Value)) -> Vec<String> {
    let mut documents = match read_documents(&manifest_dir()) {
        Ok(documents) => documents,
        Err(problem) => panic!("{problem}"),
    };
    let Some(document) = documents
        .iter_mut()
        .find(|d| d.kind() == kind && (name.is_empty() || d.name() == name))
    else {
        panic!("no {kind} `{name}` in the manifests");
    };
    change(&mut document.value);
    match Manifests::from_documents(documents) {
        Ok(manifests) => all_checks(&manifests),
        Err(problems) => problems,
    }
}

/// The value at `pointer`, which must exist.
fn at<'v>(value: &'v mut Value, pointer: &str) -> &'v mut Value {
    match value.pointer_mut(pointer) {
        Some(found) => found,
        None => panic!("no `{pointer}` in the manifest"),
    }
}

fn array<'v>(value: &'v mut Value, pointer: &str) -> &'v mut Vec<Value> {
    match at(value, pointer).as_array_mut() {
        Some(array) => array,
        None => panic!("`{pointer}` is not a list"),
    }
}

fn object<'v>(value: &'v mut Value, pointer: &str) -> &'v mut serde_json::Map<String, Value> {
    match at(value, pointer).as_object_mut() {
        Some(object) => object,
        None => panic!("`{pointer}` is not a map"),
    }
}

/// The daemon's KDL, changed by `edit`.
fn broken_system(edit: impl FnOnce(&str) -> String) -> Vec<String> {
    broken("ConfigMap", "buildit-system", |v| {
        let text = at(v, "/data/buildit-system.kdl");
        let old = text.as_str().unwrap_or_default().to_owned();
        let new = edit(&old);
        assert_ne!(old, new, "the edit changed nothing");
        *text = Value::String(new);
    })
}

fn assert_caught(problems: &[String], expected: &str) {
    assert!(
        problems.iter().any(|p| p.contains(expected)),
        "expected a problem with `{expected}`, got {problems:#?}"
    );
}

#[test]
fn an_unknown_kind_or_a_misspelt_field_is_caught() {
    assert_caught(
        &broken("Namespace", "", |v| v["kind"] = "Namespce".into()),
        "unknown kind `Namespce`",
    );
    assert_caught(
        &broken("Deployment", "buildit-daemon", |v| {
            let spec = object(v, "/spec/template/spec");
            let account = spec.remove("serviceAccountName").unwrap_or_default();
            spec.insert("serviceAcountName".to_owned(), account);
        }),
        "`/spec/template/spec/serviceAcountName` is not a field",
    );
    assert_caught(
        &broken("StatefulSet", "postgres", |v| {
            *at(v, "/spec/replicas") = "one".into()
        }),
        "not a valid StatefulSet",
    );
    assert_caught(
        &broken("Role", ROLE, |v| v["kind"] = "ClusterRole".into()),
        "a ClusterRole",
    );
}

#[test]
fn an_object_outside_the_namespace_is_caught() {
    assert_caught(
        &broken("Service", "postgres", |v| {
            at(v, "/metadata")["namespace"] = "default".into()
        }),
        "Service/postgres is in namespace Some(\"default\")",
    );
    assert_caught(
        &broken("Secret", "", |v| {
            object(v, "/metadata").remove("namespace");
        }),
        "Secret/buildit-postgres is in namespace None",
    );
}

#[test]
fn a_role_that_grants_more_or_less_than_the_executor_calls_is_caught() {
    assert_caught(
        &broken("Role", ROLE, |v| {
            array(v, "/rules/3/verbs").push("watch".into())
        }),
        "grants `watch` on \"\" `secrets`",
    );
    assert_caught(
        &broken("Role", ROLE, |v| {
            array(v, "/rules/0/verbs").retain(|verb| verb != "get")
        }),
        "does not grant `get` on \"batch\" `jobs`",
    );
    assert_caught(
        &broken("Role", ROLE, |v| {
            *at(v, "/rules/3/resources/0") = "*".into()
        }),
        "a wildcard",
    );
    assert_caught(
        &broken("Role", ROLE, |v| {
            at(v, "/rules/2")["resourceNames"] = serde_json::json!(["x"])
        }),
        "resourceNames",
    );
}

#[test]
fn a_binding_to_another_account_or_role_is_caught() {
    assert_caught(
        &broken("RoleBinding", ROLE, |v| {
            *at(v, "/subjects/0/name") = "default".into()
        }),
        "not the daemon's ServiceAccount",
    );
    assert_caught(
        &broken("RoleBinding", ROLE, |v| {
            *at(v, "/roleRef/name") = "edit".into()
        }),
        "not the Role",
    );
    assert_caught(
        &broken("Deployment", "buildit-daemon", |v| {
            *at(v, "/spec/template/spec/serviceAccountName") = "default".into()
        }),
        "which is no ServiceAccount of the manifests",
    );
    assert_caught(
        &broken("ServiceAccount", "buildit-stage", |v| {
            v["automountServiceAccountToken"] = true.into()
        }),
        "mounts its token",
    );
    assert_caught(
        &broken("RoleBinding", ROLE, |v| {
            array(v, "/subjects").push(
                serde_json::json!({"kind": "ServiceAccount", "name": "buildit-stage", "namespace": "buildit"}),
            );
        }),
        "`buildit-stage` is bound to a Role",
    );
}

#[test]
fn a_system_configuration_that_buildit_would_refuse_or_that_points_elsewhere_is_caught() {
    assert_caught(
        &broken_system(|kdl| kdl.replace("namespace \"buildit\"", "namspace \"buildit\"")),
        "does not parse",
    );
    assert_caught(
        &broken_system(|kdl| kdl.replace("namespace \"buildit\"", "namespace \"ci\"")),
        "not `buildit`",
    );
    assert_caught(
        &broken_system(|kdl| {
            kdl.replace(
                "service-account \"buildit-stage\"",
                "service-account \"default\"",
            )
        }),
        "stage pods run as `default`",
    );
    assert_caught(
        &broken_system(|kdl| {
            let store = kdl
                .lines()
                .find(|l| l.starts_with("store"))
                .unwrap_or_default();
            kdl.replace(
                store,
                "store \"sqlite\" path=\"/var/lib/buildit/buildit.db\"",
            )
        }),
        "not PostgreSQL",
    );
    assert_caught(
        &broken("Deployment", "buildit-daemon", |v| {
            *at(v, "/spec/template/spec/containers/0/env/0/value") = "/etc/system.kdl".into()
        }),
        "nothing is mounted at `/etc`",
    );
}

#[test]
fn a_database_or_user_other_than_buildit_is_caught() {
    assert_caught(
        &broken("StatefulSet", "postgres", |v| {
            *at(v, "/spec/template/spec/containers/0/env/0/value") = "postgres".into()
        }),
        "`POSTGRES_DB` is Some(\"postgres\")",
    );
    assert_caught(
        &broken_system(|kdl| kdl.replace("postgres://buildit@", "postgres://postgres@")),
        "connects as `postgres`",
    );
    assert_caught(
        &broken_system(|kdl| kdl.replace(":5432/buildit?", ":5432/ci?")),
        "to `ci`",
    );
    assert_caught(
        &broken_system(|kdl| kdl.replace("@postgres.buildit.svc", "@db.buildit.svc")),
        "`db.buildit.svc:5432`, which is no Service",
    );
}

#[test]
fn a_password_not_taken_from_the_secret_is_caught() {
    assert_caught(
        &broken("Deployment", "buildit-daemon", |v| {
            *at(v, "/spec/template/spec/containers/0/env/1") =
                serde_json::json!({"name": "BUILDIT_DB_PASSWORD", "value": "change-me"});
        }),
        "written in it",
    );
    assert_caught(
        &broken("Deployment", "buildit-daemon", |v| {
            *at(
                v,
                "/spec/template/spec/containers/0/env/1/valueFrom/secretKeyRef/name",
            ) = "other".into();
        }),
        "is not from the Secret `buildit-postgres`",
    );
    assert_caught(
        &broken_system(|kdl| kdl.replace("postgres://buildit@", "postgres://buildit:change-me@")),
        "has a password in it",
    );
}

#[test]
fn a_daemon_that_cannot_start_or_stop_cleanly_is_caught() {
    assert_caught(
        &broken("Deployment", "buildit-daemon", |v| {
            *at(v, "/spec/template/spec/terminationGracePeriodSeconds") = 30.into()
        }),
        "not longer than the drain window",
    );
    assert_caught(
        &broken("Deployment", "buildit-daemon", |v| {
            *at(
                v,
                "/spec/template/spec/containers/0/readinessProbe/grpc/port",
            ) = 8080.into()
        }),
        "readiness probe is not gRPC health on 7777",
    );
    assert_caught(
        &broken("Deployment", "buildit-daemon", |v| {
            *at(
                v,
                "/spec/template/spec/containers/0/volumeMounts/0/mountPath",
            ) = "/data".into()
        }),
        "`/var/lib/buildit` is not an emptyDir",
    );
    assert_caught(
        &broken("Kustomization", "", |v| {
            array(v, "/resources").retain(|f| f != "rbac.yaml")
        }),
        "kustomization.yaml lists",
    );
}

#[test]
fn source_links_that_pods_cannot_reach_are_caught() {
    assert_caught(
        &broken("Deployment", "buildit-daemon", |v| {
            let command = array(v, "/spec/template/spec/containers/0/command");
            let at = command
                .iter()
                .position(|arg| arg == "--source-url")
                .unwrap_or_else(|| panic!("no --source-url"));
            command[at + 1] = "http://buildit.buildit.svc:7778".into();
        }),
        "names no Service",
    );
    assert_caught(
        &broken("Deployment", "buildit-daemon", |v| {
            array(v, "/spec/template/spec/containers/0/command").retain(|arg| {
                !arg.as_str()
                    .is_some_and(|arg| arg == "--source-url" || arg.starts_with("http://"))
            });
        }),
        "have no `--source-url`",
    );
    assert_caught(
        &broken("Service", "buildit-daemon", |v| {
            for port in array(v, "/spec/ports") {
                if port["name"] == "sources" {
                    port["port"] = 7779.into();
                }
            }
        }),
        "no port 7778 of the Service `buildit-daemon` leads to the source links' port 7778",
    );
    assert_caught(
        &broken("Deployment", "buildit-daemon", |v| {
            array(v, "/spec/template/spec/containers/0/ports").retain(|p| p["name"] != "sources");
        }),
        "does not declare its source links' port 7778",
    );
}
