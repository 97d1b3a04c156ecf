//! The objects the fake holds, one resource-version counter over all of them, and the stream of their
//! changes.

mod changes;
mod defaults;
pub(crate) mod meta;
mod objects;
mod resource;
mod typed;
mod validation;

pub use changes::{Change, ChangeType};
pub(crate) use objects::{ObjectKey, Store, StoreError, Subscription};
pub use resource::Resource;
