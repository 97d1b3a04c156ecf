//! Services: sidecar containers started on a network of their own before the stage, until each is ready.

use std::collections::HashMap;
use std::time::Duration;

use bollard::models::{
    ContainerCreateBody, EndpointSettings, ExecConfig, HostConfig, NetworkCreateRequest,
    NetworkingConfig,
};
use bollard::query_parameters::LogsOptionsBuilder;
use futures_util::StreamExt as _;

use super::engine::{DockerExecutor, backend, unique_name};
use crate::exec::executor::{ExecError, ReadyCheck, ServiceSpec, StageSpec};

/// The services of one attempt: their containers and the network they share with the stage.
#[derive(Debug, Clone, Default)]
pub(super) struct ServiceGroup {
    /// Their network, once created.
    pub(super) network: Option<String>,
    /// Each service's name and container id.
    pub(super) containers: Vec<(String, String)>,
}

/// Lines of a service's log shown when it never became ready.
const SERVICE_LOG_TAIL: &str = "20";

impl DockerExecutor {
    /// A stage with services sits on their network; it joins the configured `network` too, so that what it
    /// reaches there (a registry, a cache proxy) stays reachable.
    pub(super) async fn join_configured_network(
        &self,
        id: &str,
        services: &ServiceGroup,
    ) -> Result<(), ExecError> {
        let (Some(configured), Some(_)) = (&self.options.network, &services.network) else {
            return Ok(());
        };
        self.docker
            .connect_network(
                configured,
                bollard::models::NetworkConnectRequest {
                    container: id.to_owned(),
                    ..bollard::models::NetworkConnectRequest::default()
                },
            )
            .await
            .map_err(|error| backend(&format!("cannot join network `{configured}`"), error))
    }

    /// Starts the stage's services on a network of their own and waits until each is ready. On failure,
    /// everything started is removed again.
    pub(super) async fn start_services(&self, spec: &StageSpec) -> Result<ServiceGroup, ExecError> {
        let mut group = ServiceGroup::default();
        let result = self.start_services_into(spec, &mut group).await;
        if let Err(error) = result {
            self.remove_services(&group).await;
            return Err(error);
        }
        Ok(group)
    }

    async fn start_services_into(
        &self,
        spec: &StageSpec,
        group: &mut ServiceGroup,
    ) -> Result<(), ExecError> {
        let labels = self.attempt_labels(spec);
        let network = unique_name();
        self.docker
            .create_network(NetworkCreateRequest {
                name: network.clone(),
                labels: Some(labels.clone()),
                ..NetworkCreateRequest::default()
            })
            .await
            .map_err(|error| backend("cannot create the services' network", error))?;
        group.network = Some(network.clone());
        for service in &spec.services {
            self.ensure_image(&service.image, spec.notes.as_ref())
                .await?;
            let mut service_labels = labels.clone();
            service_labels.insert("buildit.service".to_owned(), service.name.clone());
            let body = ContainerCreateBody {
                image: Some(service.image.clone()),
                cmd: (!service.command.is_empty()).then(|| service.command.clone()),
                env: Some(
                    service
                        .env
                        .iter()
                        .map(|(name, value)| format!("{name}={value}"))
                        .collect(),
                ),
                labels: Some(service_labels),
                host_config: Some(HostConfig {
                    init: Some(true),
                    network_mode: Some(network.clone()),
                    ..HostConfig::default()
                }),
                networking_config: Some(NetworkingConfig {
                    endpoints_config: Some(HashMap::from([(
                        network.clone(),
                        EndpointSettings {
                            aliases: Some(vec![service.name.clone()]),
                            ..EndpointSettings::default()
                        },
                    )])),
                }),
                ..ContainerCreateBody::default()
            };
            let what = format!("service `{}`", service.name);
            let created = self
                .docker
                .create_container(
                    None::<bollard::query_parameters::CreateContainerOptions>,
                    body,
                )
                .await
                .map_err(|error| {
                    backend(
                        &format!("cannot create {what} from `{}`", service.image),
                        error,
                    )
                })?;
            group
                .containers
                .push((service.name.clone(), created.id.clone()));
            self.docker
                .start_container(
                    &created.id,
                    None::<bollard::query_parameters::StartContainerOptions>,
                )
                .await
                .map_err(|error| backend(&format!("cannot start {what}"), error))?;
        }
        for (service, (_, id)) in spec.services.iter().zip(group.containers.clone()) {
            self.wait_ready(service, &id).await?;
        }
        Ok(())
    }

    /// Runs the service's `ready` command inside it until it succeeds, or fails with its last log lines.
    async fn wait_ready(&self, service: &ServiceSpec, id: &str) -> Result<(), ExecError> {
        let deadline = tokio::time::Instant::now() + service.ready_timeout;
        loop {
            let running = self
                .container_state(id)
                .await
                .and_then(|state| state.running)
                .unwrap_or(false);
            if !running {
                return Err(ExecError::Backend(format!(
                    "service `{}` stopped before it was ready{}",
                    service.name,
                    self.log_tail(id).await
                )));
            }
            // Without a `ready` command, running is ready.
            let Some(ready) = &service.ready else {
                return Ok(());
            };
            // One check may hang (a connection that is accepted and never answered): it gets what is left of
            // the readiness time, never more.
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if tokio::time::timeout(left, self.exec_succeeds(id, ready))
                .await
                .unwrap_or(false)
            {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ExecError::Backend(format!(
                    "service `{}` was not ready after {} s (`{ready}` kept failing){}",
                    service.name,
                    service.ready_timeout.as_secs(),
                    self.log_tail(id).await
                )));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn exec_succeeds(&self, id: &str, check: &ReadyCheck) -> bool {
        let config = ExecConfig {
            cmd: Some(check.argv()),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            ..ExecConfig::default()
        };
        let Ok(exec) = self.docker.create_exec(id, config).await else {
            return false;
        };
        match self.docker.start_exec(&exec.id, None).await {
            Ok(bollard::exec::StartExecResults::Attached { mut output, .. }) => {
                while output.next().await.is_some() {}
            }
            Ok(bollard::exec::StartExecResults::Detached) => {}
            Err(_) => return false,
        }
        self.docker
            .inspect_exec(&exec.id)
            .await
            .ok()
            .and_then(|inspected| inspected.exit_code)
            == Some(0)
    }

    /// The last lines of a container's output, for error messages.
    async fn log_tail(&self, id: &str) -> String {
        let options = LogsOptionsBuilder::new()
            .stdout(true)
            .stderr(true)
            .tail(SERVICE_LOG_TAIL)
            .build();
        let mut logs = self.docker.logs(id, Some(options));
        let mut text = String::new();
        while let Some(Ok(chunk)) = logs.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
        }
        let text = text.trim_end();
        if text.is_empty() {
            String::new()
        } else {
            format!("; its last lines:\n{text}")
        }
    }

    pub(super) async fn remove_services(&self, group: &ServiceGroup) {
        for (_, id) in &group.containers {
            self.remove(id).await;
        }
        if let Some(network) = &group.network {
            let _ = self.docker.remove_network(network).await;
        }
    }
}
