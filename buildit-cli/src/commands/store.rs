//! Opening the store a command works with: `--database-url` / `BUILDIT_DATABASE_URL`, else the system
//! configuration's `store`.

use std::sync::Arc;

use buildit_core::store::{Store, StoreLocation, open_store};
use buildit_core::system::SystemConfig;

use crate::cli::StoreArgs;
use crate::exit::Exit;
use crate::report::error_line;

/// Where the store is, by the flags and the system configuration.
pub(crate) fn locate(args: &StoreArgs, system: &SystemConfig) -> Result<StoreLocation, Exit> {
    location(args, system).map_err(|error| {
        error_line(&error.to_string(), None);
        Exit::Usage
    })
}

/// Where the store is, or nothing when the flags or the configuration do not say it clearly (nothing is
/// printed: [`locate`] reports that later, in its place).
pub(crate) fn locate_quietly(args: &StoreArgs, system: &SystemConfig) -> Option<StoreLocation> {
    location(args, system).ok()
}

fn location(
    args: &StoreArgs,
    system: &SystemConfig,
) -> Result<StoreLocation, buildit_core::store::StoreError> {
    match &args.database_url {
        Some(url) => StoreLocation::from_url(url),
        None => StoreLocation::from_config(&system.store, |name| std::env::var(name).ok()),
    }
}

/// Opens (and migrates) the store; an unreachable or broken store is an infrastructure error.
pub(crate) async fn open(location: &StoreLocation) -> Result<Arc<dyn Store>, Exit> {
    opened(open_store(location).await)
}

/// The outcome of opening the store, reported as [`open`] reports it.
pub(crate) fn opened(
    result: Result<Arc<dyn Store>, buildit_core::store::StoreError>,
) -> Result<Arc<dyn Store>, Exit> {
    result.map_err(|error| {
        error_line(&error.to_string(), None);
        Exit::Infrastructure
    })
}
