//! The `buildit.v1.BuildIt` service: each handler checks the caller's token, converts the request, calls the
//! core, and converts the answer. One file per concern; the trait implementation here only delegates.

mod auth;
mod paging;
mod pipelines;
mod runs;
mod status;
mod trigger;
mod upload;
mod watch;

use std::pin::Pin;
use std::sync::Arc;

use buildit_core::store::Store;
use buildit_core::system::SystemConfig;
use tokio_stream::Stream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::proto;
use crate::registry::Registry;

/// The service's state: the store, the daemon's system configuration, its runs.
#[derive(Debug, Clone)]
pub struct BuildItService {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) system: Arc<SystemConfig>,
    pub(crate) registry: Arc<Registry>,
    /// Where uploads are kept (`sources/<tenant>`).
    pub(crate) data_dir: std::path::PathBuf,
    /// Cancelled when the daemon stops: open streams end with UNAVAILABLE and where to resume.
    pub(crate) shutdown: CancellationToken,
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<proto::WatchRunResponse, Status>> + Send>>;
type LogsStream = Pin<Box<dyn Stream<Item = Result<proto::StreamLogsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl proto::build_it_server::BuildIt for BuildItService {
    async fn trigger_run(
        &self,
        request: Request<proto::TriggerRunRequest>,
    ) -> Result<Response<proto::TriggerRunResponse>, Status> {
        self.trigger(request).await
    }

    async fn get_run(
        &self,
        request: Request<proto::GetRunRequest>,
    ) -> Result<Response<proto::Run>, Status> {
        self.get(request).await
    }

    async fn list_runs(
        &self,
        request: Request<proto::ListRunsRequest>,
    ) -> Result<Response<proto::ListRunsResponse>, Status> {
        self.list(request).await
    }

    async fn cancel_run(
        &self,
        request: Request<proto::CancelRunRequest>,
    ) -> Result<Response<proto::Run>, Status> {
        self.cancel(request).await
    }

    async fn upload_source(
        &self,
        request: Request<tonic::Streaming<proto::UploadSourceRequest>>,
    ) -> Result<Response<proto::UploadSourceResponse>, Status> {
        self.upload(request).await
    }

    type StreamLogsStream = LogsStream;

    async fn stream_logs(
        &self,
        request: Request<proto::StreamLogsRequest>,
    ) -> Result<Response<LogsStream>, Status> {
        self.open_logs(request).await
    }

    type WatchRunStream = WatchStream;

    async fn watch_run(
        &self,
        request: Request<proto::WatchRunRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        self.open_watch(request).await
    }

    async fn register_pipeline(
        &self,
        request: Request<proto::RegisterPipelineRequest>,
    ) -> Result<Response<proto::RegisterPipelineResponse>, Status> {
        self.register(request).await
    }

    async fn get_pipeline(
        &self,
        request: Request<proto::GetPipelineRequest>,
    ) -> Result<Response<proto::Pipeline>, Status> {
        self.pipeline(request).await
    }

    async fn list_pipelines(
        &self,
        request: Request<proto::ListPipelinesRequest>,
    ) -> Result<Response<proto::ListPipelinesResponse>, Status> {
        self.pipelines(request).await
    }
}
