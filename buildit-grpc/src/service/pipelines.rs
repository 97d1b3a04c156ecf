//! RegisterPipeline, GetPipeline and ListPipelines: a tenant's registered pipelines, validated on registration as
//! a trigger validates, kept under the name their text declares.

use buildit_core::store::{NewPipeline, PipelineFilter};
use tonic::{Request, Response, Status};

use super::BuildItService;
use super::paging::{page_size, pipeline_cursor, pipeline_token};
use super::status::{planned, store_status};
use super::trigger::DEFAULT_FILE_NAME;
use crate::jobs::RunJob;
use crate::{convert, proto};

impl BuildItService {
    pub(super) async fn register(
        &self,
        request: Request<proto::RegisterPipelineRequest>,
    ) -> Result<Response<proto::RegisterPipelineResponse>, Status> {
        let tenant = self.tenant(&request).await?;
        let registrant = self.token_label(&request).await;
        let request = request.into_inner();
        let file_name = Some(request.file_name)
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| DEFAULT_FILE_NAME.to_owned());
        // Checked as a trigger of it with no context would be: what registers can be triggered.
        let job = RunJob {
            run_id: String::new(),
            name: String::new(),
            pipeline: request.pipeline,
            file_name,
            branch: None,
            sha: None,
            tag: None,
            event: None,
            env: std::collections::BTreeMap::new(),
            stages: Vec::new(),
            source: None,
            match_triggers: false,
            changes: None,
            includes: std::collections::BTreeMap::new(),
        };
        let plan = planned(&job, &self.system)?;
        let name = plan.pipeline().name.value.clone();
        if !request.name.is_empty() && request.name != name {
            return Err(Status::invalid_argument(format!(
                "the pipeline's text declares `pipeline \"{name}\"`, not `{}`",
                request.name
            )));
        }
        let store = self.store.for_tenant(&tenant);
        let changed = store
            .register_pipeline(&NewPipeline {
                name: name.clone(),
                file_name: job.file_name,
                source: job.pipeline,
                registered_by: registrant,
            })
            .await
            .map_err(|error| store_status(&error))?;
        let stored = store
            .get_pipeline(&name)
            .await
            .map_err(|error| store_status(&error))?
            .ok_or_else(|| Status::unavailable(format!("the store lost pipeline `{name}`")))?;
        Ok(Response::new(proto::RegisterPipelineResponse {
            pipeline: Some(convert::pipeline(&stored)),
            changed,
        }))
    }

    pub(super) async fn pipeline(
        &self,
        request: Request<proto::GetPipelineRequest>,
    ) -> Result<Response<proto::Pipeline>, Status> {
        let tenant = self.tenant(&request).await?;
        let name = &request.get_ref().name;
        let stored = self
            .store
            .for_tenant(&tenant)
            .get_pipeline(name)
            .await
            .map_err(|error| store_status(&error))?
            // Another tenant's pipeline is not found, never forbidden.
            .ok_or_else(|| Status::not_found(format!("no registered pipeline `{name}`")))?;
        Ok(Response::new(convert::pipeline(&stored)))
    }

    pub(super) async fn pipelines(
        &self,
        request: Request<proto::ListPipelinesRequest>,
    ) -> Result<Response<proto::ListPipelinesResponse>, Status> {
        let tenant = self.tenant(&request).await?;
        let request = request.into_inner();
        let limit = page_size(request.page_size);
        let after = pipeline_cursor(&request.page_token)?;
        let mut found = self
            .store
            .for_tenant(&tenant)
            .list_pipelines(&PipelineFilter {
                after,
                limit: limit.saturating_add(1),
            })
            .await
            .map_err(|error| store_status(&error))?;
        let more = found.len() > limit as usize;
        found.truncate(limit as usize);
        let next_page_token = match found.last() {
            Some(last) if more => pipeline_token(&last.name),
            _ => String::new(),
        };
        Ok(Response::new(proto::ListPipelinesResponse {
            pipelines: found
                .iter()
                .map(|record| proto::Pipeline {
                    // Pages stay small: GetPipeline has the text.
                    source: String::new(),
                    ..convert::pipeline(record)
                })
                .collect(),
            next_page_token,
        }))
    }
}
