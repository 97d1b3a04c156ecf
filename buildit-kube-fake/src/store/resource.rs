//! The resources the fake serves: how each is named in paths, its kind and API version, and what discovery
//! says of it.

/// One kind of object the fake stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Resource {
    /// `batch/v1` Jobs.
    Jobs,
    /// `v1` Pods.
    Pods,
    /// `v1` Secrets.
    Secrets,
    /// `v1` PersistentVolumeClaims.
    PersistentVolumeClaims,
    /// `v1` Events.
    Events,
}

impl Resource {
    /// Every stored resource.
    pub const ALL: [Resource; 5] = [
        Resource::Jobs,
        Resource::Pods,
        Resource::Secrets,
        Resource::PersistentVolumeClaims,
        Resource::Events,
    ];

    /// The plural name used in paths (`pods`).
    pub fn plural(self) -> &'static str {
        match self {
            Resource::Jobs => "jobs",
            Resource::Pods => "pods",
            Resource::Secrets => "secrets",
            Resource::PersistentVolumeClaims => "persistentvolumeclaims",
            Resource::Events => "events",
        }
    }

    /// The singular name discovery gives.
    pub fn singular(self) -> &'static str {
        match self {
            Resource::Jobs => "job",
            Resource::Pods => "pod",
            Resource::Secrets => "secret",
            Resource::PersistentVolumeClaims => "persistentvolumeclaim",
            Resource::Events => "event",
        }
    }

    /// The object kind (`Pod`).
    pub fn kind(self) -> &'static str {
        match self {
            Resource::Jobs => "Job",
            Resource::Pods => "Pod",
            Resource::Secrets => "Secret",
            Resource::PersistentVolumeClaims => "PersistentVolumeClaim",
            Resource::Events => "Event",
        }
    }

    /// The API group: `batch`, or `""` for the core group.
    pub fn group(self) -> &'static str {
        match self {
            Resource::Jobs => "batch",
            _ => "",
        }
    }

    /// `apiVersion` of its objects.
    pub fn api_version(self) -> &'static str {
        match self {
            Resource::Jobs => "batch/v1",
            _ => "v1",
        }
    }

    /// The short names kubectl accepts.
    pub fn short_names(self) -> &'static [&'static str] {
        match self {
            Resource::Pods => &["po"],
            Resource::PersistentVolumeClaims => &["pvc"],
            Resource::Events => &["ev"],
            Resource::Jobs | Resource::Secrets => &[],
        }
    }

    /// Categories kubectl's `all` uses.
    pub fn categories(self) -> &'static [&'static str] {
        match self {
            Resource::Jobs | Resource::Pods => &["all"],
            _ => &[],
        }
    }

    /// The resource named `plural` in the group `group` (`""` for the core group), version `v1`.
    pub fn from_path(group: &str, version: &str, plural: &str) -> Option<Resource> {
        if version != "v1" {
            return None;
        }
        Resource::ALL
            .into_iter()
            .find(|resource| resource.group() == group && resource.plural() == plural)
    }

    /// How errors name it: `jobs.batch`, `pods`.
    pub fn qualified(self) -> String {
        match self.group() {
            "" => self.plural().to_owned(),
            group => format!("{}.{group}", self.plural()),
        }
    }
}
