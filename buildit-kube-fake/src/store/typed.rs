//! The store seen through `k8s-openapi` types, for the controllers and the kubelet: they read and change
//! typed objects while the store keeps the JSON the API serves.

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{ObjectKey, Resource, Store, StoreError};

impl Store {
    /// The object at `key` as a `T`, if it exists and has that shape.
    pub fn get_as<T: DeserializeOwned>(&self, key: &ObjectKey) -> Option<T> {
        serde_json::from_value(self.get(key)?).ok()
    }

    /// Every object of `resource` in `namespace` (or all) that has the shape of a `T`.
    pub fn list_as<T: DeserializeOwned>(
        &self,
        resource: Resource,
        namespace: Option<&str>,
    ) -> Vec<T> {
        self.list(resource, namespace)
            .0
            .into_iter()
            .filter_map(|object| serde_json::from_value(object).ok())
            .collect()
    }

    /// Changes the object at `key` as a `T`; it after the change, or `None` if it is gone (or not a `T`).
    pub fn update_as<T: DeserializeOwned + Serialize>(
        &self,
        key: &ObjectKey,
        change: impl FnOnce(&mut T),
    ) -> Option<T> {
        let mut shape_ok = true;
        let updated = self.update(key, |object| {
            let Ok(mut typed) = serde_json::from_value::<T>(object.clone()) else {
                shape_ok = false;
                return;
            };
            change(&mut typed);
            if let Ok(value) = serde_json::to_value(&typed) {
                *object = value;
            }
        })?;
        if !shape_ok {
            return None;
        }
        serde_json::from_value(updated).ok()
    }

    /// Creates a typed object (its `apiVersion` and `kind` come with the type).
    pub fn create_as<T: DeserializeOwned + Serialize>(
        &self,
        resource: Resource,
        namespace: &str,
        object: &T,
    ) -> Result<T, StoreError> {
        let value =
            serde_json::to_value(object).map_err(|error| StoreError::Invalid(error.to_string()))?;
        let created = self.create(resource, namespace, value)?;
        serde_json::from_value(created).map_err(|error| StoreError::Invalid(error.to_string()))
    }
}
