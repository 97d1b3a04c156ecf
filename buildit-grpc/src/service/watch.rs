//! StreamLogs and WatchRun: the run is checked to be the caller's, then its stream is fed by a task of its own
//! (the streaming itself is the `stream` module's).

use tonic::{Request, Response, Status};

use super::{BuildItService, LogsStream, WatchStream};
use crate::proto;

impl BuildItService {
    pub(super) async fn open_logs(
        &self,
        request: Request<proto::StreamLogsRequest>,
    ) -> Result<Response<LogsStream>, Status> {
        let tenant = self.tenant(&request).await?;
        let request = request.into_inner();
        self.find(&tenant, &request.run).await?;
        let (sender, receiver) = tokio::sync::mpsc::channel(4);
        let service = self.clone();
        tokio::spawn(async move { service.logs_stream(&tenant, request, sender).await });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(receiver),
        )))
    }

    pub(super) async fn open_watch(
        &self,
        request: Request<proto::WatchRunRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        let tenant = self.tenant(&request).await?;
        let request = request.into_inner();
        self.find(&tenant, &request.run).await?;
        let (sender, receiver) = tokio::sync::mpsc::channel(4);
        let service = self.clone();
        tokio::spawn(async move {
            service
                .watch_stream(&tenant, &request.run, request.after_seq, sender)
                .await;
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(receiver),
        )))
    }
}
