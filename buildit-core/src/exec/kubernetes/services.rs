//! A stage's services on Kubernetes: native sidecars of the stage's pod (init containers that keep running),
//! whose `ready` command is their startup probe, reachable from the stage by name.

use k8s_openapi::api::core::v1::{Container, EnvVar, ExecAction, HostAlias, Probe};

use crate::exec::executor::ServiceSpec;

/// What each service's container name starts with (the stage's is `stage`).
const SERVICE_PREFIX: &str = "service-";
/// How often a `ready` command runs while it fails.
const READY_PERIOD_SECONDS: i32 = 1;
/// The longest one run of a `ready` command may take.
const READY_TRY_SECONDS: i32 = 5;
/// The longest container name the API takes.
const MAX_CONTAINER_NAME: usize = 63;

/// The name of service `name`'s container: `service-` and the name, made a DNS label where it is not one
/// (with a hash, so that two names never share one).
pub fn container_name(name: &str) -> String {
    let plain: String = name
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let full = format!("{SERVICE_PREFIX}{plain}");
    if plain == name && full.len() <= MAX_CONTAINER_NAME && !name.ends_with('-') {
        return full;
    }
    let hash = super::names::short_hash(name);
    let room = MAX_CONTAINER_NAME - SERVICE_PREFIX.len() - hash.len() - 1;
    let kept: String = plain.chars().take(room).collect();
    format!("{SERVICE_PREFIX}{}-{hash}", kept.trim_matches('-'))
}

/// The service a container of the stage's pod runs, by its container name (as written when it is one).
pub fn service_of(container: &str) -> Option<&str> {
    container.strip_prefix(SERVICE_PREFIX)
}

/// The sidecars that run `services` beside the stage.
pub fn sidecars(services: &[ServiceSpec]) -> Vec<Container> {
    services.iter().map(sidecar).collect()
}

fn sidecar(service: &ServiceSpec) -> Container {
    let ready_seconds = i32::try_from(service.ready_timeout.as_secs().max(1)).unwrap_or(i32::MAX);
    let startup_probe = service.ready.as_ref().map(|ready| Probe {
        exec: Some(ExecAction {
            command: Some(ready.argv()),
        }),
        period_seconds: Some(READY_PERIOD_SECONDS),
        // A failing check is given up after about the timeout (one failure a second); one that hangs is cut
        // after a few seconds, so that a hanging check cannot stretch the wait far past the timeout.
        timeout_seconds: Some(ready_seconds.min(READY_TRY_SECONDS)),
        failure_threshold: Some(ready_seconds),
        ..Probe::default()
    });
    Container {
        name: container_name(&service.name),
        image: Some(service.image.clone()),
        // As Docker's `cmd`: the image's entrypoint, if any, runs it.
        args: (!service.command.is_empty()).then(|| service.command.clone()),
        env: Some(
            service
                .env
                .iter()
                .map(|(name, value)| EnvVar {
                    name: name.clone(),
                    value: Some(value.clone()),
                    value_from: None,
                })
                .collect(),
        ),
        // A native sidecar: it starts before the stage, keeps running beside it, and stops after it.
        restart_policy: Some("Always".to_owned()),
        startup_probe,
        ..Container::default()
    }
}

/// Why the services cannot run on Kubernetes as they are, if they cannot: a service's name is its host name
/// there, which must be a DNS label (Docker takes more).
pub fn refused(services: &[ServiceSpec]) -> Option<String> {
    services
        .iter()
        .find(|service| !is_dns_label(&service.name))
        .map(|service| {
            format!(
                "service `{}`: on Kubernetes a service's name is its host name, which takes only lowercase \
                 letters, digits and `-` (at most 63, a letter or digit at each end)",
                service.name
            )
        })
}

fn is_dns_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_CONTAINER_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// The stage reaches each service by its name: the pod's containers share one network, so the names point at
/// the pod itself.
pub fn host_aliases(services: &[ServiceSpec]) -> Option<Vec<HostAlias>> {
    (!services.is_empty()).then(|| {
        vec![HostAlias {
            ip: "127.0.0.1".to_owned(),
            hostnames: Some(
                services
                    .iter()
                    .map(|service| service.name.clone())
                    .collect(),
            ),
        }]
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use super::*;
    use crate::exec::executor::ReadyCheck;

    fn service(name: &str) -> ServiceSpec {
        ServiceSpec {
            name: name.to_owned(),
            image: "postgres:16".to_owned(),
            env: BTreeMap::from([("POSTGRES_PASSWORD".to_owned(), "x".to_owned())]),
            command: vec![
                "postgres".to_owned(),
                "-c".to_owned(),
                "fsync=off".to_owned(),
            ],
            ready: Some(ReadyCheck::Shell("pg_isready".to_owned())),
            ready_timeout: Duration::from_secs(30),
        }
    }

    #[test]
    fn a_service_is_a_sidecar_whose_ready_command_is_its_startup_probe() {
        let containers = sidecars(&[service("db")]);
        let json = serde_json::to_value(&containers).unwrap_or_default();
        assert_eq!(json[0]["name"], "service-db");
        assert_eq!(json[0]["restartPolicy"], "Always");
        assert_eq!(json[0]["args"][2], "fsync=off");
        assert!(json[0].get("command").is_none(), "{json}");
        let probe = &json[0]["startupProbe"];
        assert_eq!(probe["exec"]["command"][2], "pg_isready");
        assert_eq!(probe["periodSeconds"], 1);
        assert_eq!(probe["failureThreshold"], 30);
        assert_eq!(probe["timeoutSeconds"], 5);
        let aliases = serde_json::to_value(host_aliases(&[service("db"), service("cache")]))
            .unwrap_or_default();
        assert_eq!(aliases[0]["ip"], "127.0.0.1");
        assert_eq!(aliases[0]["hostnames"][1], "cache");
    }

    #[test]
    fn container_names_are_dns_labels_and_keep_services_apart() {
        assert_eq!(container_name("db"), "service-db");
        assert_eq!(service_of("service-db"), Some("db"));
        let dotted = container_name("db.main");
        let dashed = container_name("db-main");
        assert_eq!(dashed, "service-db-main");
        assert_ne!(dotted, dashed);
        assert!(dotted.starts_with("service-db-main-"), "{dotted}");
        let named = |name: &str| ServiceSpec {
            name: name.to_owned(),
            ..service("db")
        };
        assert_eq!(refused(&[named("db"), named("cache-2")]), None);
        for bad in ["my_db", "DB", "db.main", "-db"] {
            assert!(
                refused(&[named("db"), named(bad)]).is_some_and(|why| why.contains(bad)),
                "{bad}"
            );
        }
        let long = container_name(&"Cache".repeat(30));
        assert!(long.len() <= MAX_CONTAINER_NAME, "{long}");
        assert!(
            long.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
            "{long}"
        );
    }
}
