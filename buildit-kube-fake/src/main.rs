//! `buildit-kube-fake`: serves a fake Kubernetes cluster on loopback until it is stopped, after writing a
//! kubeconfig that points at it.

use std::error::Error;
use std::path::PathBuf;

use buildit_kube_fake::{FakeCluster, FakeOptions};
use clap::Parser;

/// A fake Kubernetes API server whose pods run in the local Docker Engine.
#[derive(Debug, Parser)]
#[command(name = "buildit-kube-fake", version)]
struct Arguments {
    /// Where to write a kubeconfig pointing at the fake (use it as KUBECONFIG).
    #[arg(long)]
    kubeconfig: PathBuf,
    /// The kubeconfig context's namespace.
    #[arg(long, default_value = "default")]
    namespace: String,
    /// The address to listen on.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: std::net::SocketAddr,
    /// The image of each pod's sandbox container.
    #[arg(long, default_value = "buildit-test/busybox:latest")]
    pause_image: String,
}

async fn stop_signal() {
    let interrupted = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let terminated = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut signal) => {
                    signal.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = interrupted => {}
            () = terminated => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupted.await;
    }
}

async fn serve(arguments: Arguments) -> Result<(), Box<dyn Error>> {
    let options = FakeOptions {
        pause_image: arguments.pause_image,
        listen: arguments.listen,
        ..FakeOptions::default()
    };
    let cluster = FakeCluster::start(options).await?;
    cluster
        .write_kubeconfig(&arguments.kubeconfig, &arguments.namespace)
        .map_err(|error| format!("cannot write {}: {error}", arguments.kubeconfig.display()))?;
    eprintln!("buildit-kube-fake serving on {}", cluster.url());
    stop_signal().await;
    eprintln!("buildit-kube-fake stopping: removing its containers");
    cluster.stop().await;
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let arguments = Arguments::parse();
    match serve(arguments).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("buildit-kube-fake: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}
