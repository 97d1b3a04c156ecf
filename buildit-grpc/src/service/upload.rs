//! UploadSource: a workspace archive streamed in chunks into the tenant's sources, answered with its sha256.

use tonic::{Request, Response, Status};

use super::BuildItService;
use crate::proto;

impl BuildItService {
    pub(super) async fn upload(
        &self,
        request: Request<tonic::Streaming<proto::UploadSourceRequest>>,
    ) -> Result<Response<proto::UploadSourceResponse>, Status> {
        let tenant = self.tenant(&request).await?;
        let chunks = request.into_inner();
        let bytes = tokio_stream::StreamExt::map(chunks, |chunk| {
            chunk
                .map(|chunk| bytes::Bytes::from(chunk.chunk))
                .map_err(std::io::Error::other)
        });
        let reader = tokio_util::io::StreamReader::new(bytes);
        let store = crate::jobs::sources(&self.data_dir, &tenant, &self.system);
        let digest = store.put(reader).await.map_err(|error| match error {
            buildit_core::source::SourceError::UploadTooLarge { .. } => {
                Status::resource_exhausted(error.to_string())
            }
            other => Status::invalid_argument(other.to_string()),
        })?;
        let size = std::fs::metadata(store.path(&digest)).map_or(0, |meta| meta.len());
        Ok(Response::new(proto::UploadSourceResponse {
            sha256: digest.to_string(),
            size,
        }))
    }
}
