//! The object store: objects by resource, namespace and name, as the JSON the API serves; every write bumps
//! one resource version and is broadcast to watches and controllers.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{Map, Value};
use tokio::sync::{broadcast, watch};

use super::changes::History;
use super::meta::{invalid_subdomain, new_uid, now_rfc3339, random_suffix};
use super::{Change, ChangeType, Resource};

/// How many changes a slow watch or controller may fall behind before it is told it lagged.
const BROADCAST_CAPACITY: usize = 8_192;

/// Where an object is.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    /// Its resource.
    pub resource: Resource,
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

impl ObjectKey {
    /// The key of `name` in `namespace`.
    pub fn new(resource: Resource, namespace: &str, name: &str) -> ObjectKey {
        ObjectKey {
            resource,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }
}

/// Why a write was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StoreError {
    /// An object of that name exists.
    #[error("{resource} \"{name}\" already exists")]
    AlreadyExists {
        /// `jobs.batch`, `pods`, ...
        resource: String,
        /// The name taken.
        name: String,
    },
    /// The object is not valid.
    #[error("{0}")]
    Invalid(String),
}

/// A watch's start: what it must send first, then the live changes.
#[derive(Debug)]
pub(crate) struct Subscription {
    /// Changes to send before the live ones: the current objects as `ADDED`, or the replayed history.
    pub initial: Vec<Arc<Change>>,
    /// Every later change, of every resource.
    pub live: broadcast::Receiver<Arc<Change>>,
    /// Moves when watches are forced to expire.
    pub expiry: watch::Receiver<u64>,
}

#[derive(Debug, Default)]
struct State {
    revision: u64,
    objects: BTreeMap<ObjectKey, Value>,
    history: History,
}

/// Every object of the fake cluster.
#[derive(Debug)]
pub(crate) struct Store {
    state: Mutex<State>,
    changes: broadcast::Sender<Arc<Change>>,
    expiry: watch::Sender<u64>,
}

impl Default for Store {
    fn default() -> Self {
        Store {
            state: Mutex::default(),
            changes: broadcast::channel(BROADCAST_CAPACITY).0,
            expiry: watch::channel(0).0,
        }
    }
}

fn metadata_mut(object: &mut Value) -> Option<&mut Map<String, Value>> {
    let root = object.as_object_mut()?;
    let metadata = root
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    metadata.as_object_mut()
}

fn set_revision(object: &mut Value, revision: u64) {
    if let Some(metadata) = metadata_mut(object) {
        metadata.insert(
            "resourceVersion".to_owned(),
            Value::String(revision.to_string()),
        );
    }
}

impl Store {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves the maps consistent (every write is a single insert or
        // remove), so a poisoned lock is still usable.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn record(&self, state: &mut State, change: Change) {
        let change = Arc::new(change);
        state.history.push(Arc::clone(&change));
        // No receiver is fine: nobody watches yet.
        let _ = self.changes.send(change);
    }

    /// Stores a new object in `namespace`, filling in what the API server fills in: its name from
    /// `generateName`, `uid`, `creationTimestamp`, `resourceVersion`, `namespace`.
    pub fn create(
        &self,
        resource: Resource,
        namespace: &str,
        mut object: Value,
    ) -> Result<Value, StoreError> {
        let Some(metadata) = metadata_mut(&mut object) else {
            return Err(StoreError::Invalid(
                "the object is not a JSON object".to_owned(),
            ));
        };
        if let Some(given) = metadata.get("namespace").and_then(Value::as_str)
            && given != namespace
        {
            return Err(StoreError::Invalid(format!(
                "the namespace of the provided object ({given}) does not match the namespace sent on the \
                 request ({namespace})"
            )));
        }
        let name = match metadata.get("name").and_then(Value::as_str) {
            Some(name) if !name.is_empty() => name.to_owned(),
            _ => match metadata.get("generateName").and_then(Value::as_str) {
                Some(prefix) if !prefix.is_empty() => format!("{prefix}{}", random_suffix(5)),
                _ => {
                    return Err(StoreError::Invalid(
                        "name or generateName is required".to_owned(),
                    ));
                }
            },
        };
        if let Some(problem) = invalid_subdomain(&name) {
            let error = format!("metadata.name: Invalid value: \"{name}\": {problem}");
            return Err(StoreError::Invalid(super::validation::invalid_message(
                resource,
                &name,
                &[error],
            )));
        }
        metadata.insert("name".to_owned(), Value::String(name.clone()));
        let errors = super::validation::field_errors(resource, &object);
        if !errors.is_empty() {
            return Err(StoreError::Invalid(super::validation::invalid_message(
                resource, &name, &errors,
            )));
        }
        let Some(metadata) = metadata_mut(&mut object) else {
            return Err(StoreError::Invalid(
                "the object is not a JSON object".to_owned(),
            ));
        };
        metadata.insert("namespace".to_owned(), Value::String(namespace.to_owned()));
        // The API layer drops a client's uid; a uid here was given by the fake itself (defaults need it).
        if !metadata.get("uid").is_some_and(Value::is_string) {
            metadata.insert("uid".to_owned(), Value::String(new_uid()));
        }
        metadata.insert("creationTimestamp".to_owned(), Value::String(now_rfc3339()));
        metadata.remove("deletionTimestamp");
        super::defaults::apply(resource, &mut object);
        let key = ObjectKey::new(resource, namespace, &name);
        let mut state = self.lock();
        if state.objects.contains_key(&key) {
            return Err(StoreError::AlreadyExists {
                resource: resource.qualified(),
                name,
            });
        }
        state.revision += 1;
        let revision = state.revision;
        set_revision(&mut object, revision);
        state.objects.insert(key.clone(), object.clone());
        self.record(
            &mut state,
            Change {
                key,
                change_type: ChangeType::Added,
                object: object.clone(),
                previous: None,
                revision,
            },
        );
        Ok(object)
    }

    /// The object at `key`.
    pub fn get(&self, key: &ObjectKey) -> Option<Value> {
        self.lock().objects.get(key).cloned()
    }

    /// Every object of `resource` (in `namespace`, or in all), and the current resource version.
    pub fn list(&self, resource: Resource, namespace: Option<&str>) -> (Vec<Value>, u64) {
        let state = self.lock();
        let objects = state
            .objects
            .iter()
            .filter(|(key, _)| {
                key.resource == resource && namespace.is_none_or(|ns| key.namespace == ns)
            })
            .map(|(_, object)| object.clone())
            .collect();
        (objects, state.revision)
    }

    /// The namespaces that hold at least one object.
    pub fn namespaces(&self) -> Vec<String> {
        let state = self.lock();
        let mut namespaces: Vec<String> = state
            .objects
            .keys()
            .map(|key| key.namespace.clone())
            .collect();
        namespaces.dedup();
        namespaces.sort();
        namespaces.dedup();
        namespaces
    }

    /// Changes the object at `key` with `change`; the object after it, or `None` if there is no such object.
    /// A change that changes nothing makes no new version.
    pub fn update(&self, key: &ObjectKey, change: impl FnOnce(&mut Value)) -> Option<Value> {
        let mut state = self.lock();
        let previous = state.objects.get(key)?.clone();
        let mut object = previous.clone();
        change(&mut object);
        if object == previous {
            return Some(object);
        }
        state.revision += 1;
        let revision = state.revision;
        set_revision(&mut object, revision);
        state.objects.insert(key.clone(), object.clone());
        self.record(
            &mut state,
            Change {
                key: key.clone(),
                change_type: ChangeType::Modified,
                object: object.clone(),
                previous: Some(previous),
                revision,
            },
        );
        Some(object)
    }

    /// Removes the object at `key` at once; it as it was, or `None` if there was none.
    pub fn remove(&self, key: &ObjectKey) -> Option<Value> {
        let mut state = self.lock();
        let mut object = state.objects.remove(key)?;
        state.revision += 1;
        let revision = state.revision;
        set_revision(&mut object, revision);
        self.record(
            &mut state,
            Change {
                key: key.clone(),
                change_type: ChangeType::Deleted,
                object: object.clone(),
                previous: None,
                revision,
            },
        );
        Some(object)
    }

    /// Every later change, for controllers.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Change>> {
        self.changes.subscribe()
    }

    /// Starts a watch of `resource` from `revision`: `None` (or 0) sends the current objects as `ADDED` first;
    /// a version sends what changed after it, or `None` if that was forgotten (`410 Gone`).
    pub fn watch_from(&self, resource: Resource, revision: Option<u64>) -> Option<Subscription> {
        let state = self.lock();
        let initial = match revision {
            None | Some(0) => state
                .objects
                .iter()
                .filter(|(key, _)| key.resource == resource)
                .map(|(key, object)| {
                    Arc::new(Change {
                        key: key.clone(),
                        change_type: ChangeType::Added,
                        object: object.clone(),
                        previous: None,
                        revision: state.revision,
                    })
                })
                .collect(),
            Some(revision) => state.history.since(revision)?,
        };
        // Subscribing under the lock: no change can fall between the replay and the live stream.
        Some(Subscription {
            initial,
            live: self.changes.subscribe(),
            expiry: self.expiry.subscribe(),
        })
    }

    /// Ends every open watch with `410 Gone`, and makes every version handed out so far too old to watch from:
    /// clients must list again.
    pub fn expire_watches(&self) {
        let mut state = self.lock();
        state.revision += 1;
        let revision = state.revision;
        state.history.forget_until(revision);
        self.expiry.send_modify(|generation| *generation += 1);
    }

    /// The current resource version.
    pub fn revision(&self) -> u64 {
        self.lock().revision
    }
}
