//! Leftovers: removing what runs whose owner is gone, or a run that ended, left on the engine.

use std::collections::HashMap;

use bollard::query_parameters::{
    ListContainersOptionsBuilder, ListNetworksOptionsBuilder, ListVolumesOptionsBuilder,
};

use super::engine::{DockerExecutor, backend};
use super::labels::{RUN_LABEL, owner_from_labels};
use crate::exec::executor::ExecError;
use crate::exec::sweep::{SweepReport, SweepScope};
use crate::owner::LeftoverOwner;

/// Whether a sweep by `here` within `scope` removes what carries `labels`: it belongs to the scope's run, or
/// its owner is gone. Without a readable owner, only a run's own sweep takes it.
fn swept(labels: &HashMap<String, String>, scope: &SweepScope, here: &LeftoverOwner) -> bool {
    let run = scope.run.as_deref();
    run.is_some_and(|run| labels.get(RUN_LABEL).map(String::as_str) == Some(run))
        || owner_from_labels(labels).is_some_and(|owner| owner.is_gone(here, &scope.ended_leases))
}

impl DockerExecutor {
    /// Removes the containers, networks and volumes whose owner is gone (a killed `buildit`, a restarted
    /// worker, an ended lease), and everything of the scope's run. What live owners use, and what is not
    /// BuildIt's (no run label), is never touched.
    pub(super) async fn sweep_leftovers(
        &self,
        scope: &SweepScope,
    ) -> Result<SweepReport, ExecError> {
        let filters: HashMap<String, Vec<String>> =
            HashMap::from([("label".to_owned(), vec![RUN_LABEL.to_owned()])]);
        let options = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        let containers = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|error| backend("cannot list containers", error))?;
        let here = &self.owner;
        let mut report = SweepReport::default();
        for container in containers {
            let Some(id) = container.id else { continue };
            let labels = container.labels.unwrap_or_default();
            if swept(&labels, scope, here) {
                self.remove(&id).await;
                report.containers.push(id);
            }
        }
        let options = ListNetworksOptionsBuilder::new().filters(&filters).build();
        let networks = self
            .docker
            .list_networks(Some(options))
            .await
            .map_err(|error| backend("cannot list networks", error))?;
        for network in networks {
            let Some(name) = network.name else { continue };
            let labels = network.labels.unwrap_or_default();
            if swept(&labels, scope, here) && self.docker.remove_network(&name).await.is_ok() {
                report.networks.push(name);
            }
        }
        let options = ListVolumesOptionsBuilder::new().filters(&filters).build();
        let volumes = self
            .docker
            .list_volumes(Some(options))
            .await
            .map_err(|error| backend("cannot list volumes", error))?;
        for volume in volumes.volumes.unwrap_or_default() {
            // A volume still mounted (by a live run's container) refuses removal: it is left alone.
            if swept(&volume.labels, scope, here) && self.remove_volume(&volume.name).await {
                report.volumes.push(volume.name);
            }
        }
        Ok(report)
    }
}
