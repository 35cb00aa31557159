//! Commit statuses (reference/github.md §3, the default `statuses` reporting): the builds
//! still pending are looked at every `POLL`; a build whose group now reads differently
//! (`github::group_state` over its tasks' states: `failure` once any task failed, `success`
//! once all completed) gets a commit status, and its new state is recorded once GitHub took
//! the status, so a status GitHub could not be reached for is posted again on the next look.
//!
//! Builds that report through check runs (`reporting: checks-v1`) only have their state
//! recorded: this server does not create check runs. A status GitHub refuses (4xx) is not
//! posted again; the build's state is recorded all the same.

use super::job::{APPLICATION_NAME, GITHUB_CLIENT};
use crate::AppState;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use taskledger_core::envelope::Actor;
use taskledger_core::github::{group_state, Build, BuildState, GithubCommand};

const POLL: Duration = Duration::from_secs(1);

/// Builds looked at per page.
const PAGE: usize = 100;

pub async fn run_reporter(st: Arc<AppState>) {
    loop {
        tokio::time::sleep(POLL).await;
        if !st.github.role().is_writer() {
            continue;
        }
        let Some(app) = st.github_app.as_deref() else {
            continue;
        };
        let mut after = None;
        loop {
            let page = match st.github.view().pending_builds(after.as_ref(), PAGE) {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(error = %e, "github: reading pending builds");
                    break;
                }
            };
            let Some(last) = page.last().map(|b| b.task_group_id) else {
                break;
            };
            for build in &page {
                if let Err(e) = report(&st, app, build).await {
                    tracing::warn!(error = %e, group = %build.task_group_id, "github: reporting a build");
                }
            }
            after = Some(last);
        }
    }
}

/// The state a build's group is in now, from its tasks.
fn current_state(st: &AppState, build: &Build) -> anyhow::Result<BuildState> {
    let tasks = crate::queue::groups::all_members(st, &build.task_group_id)
        .map_err(|e| anyhow::anyhow!(e.message))?;
    // the job writes the build before it creates the tasks: none yet is not success
    if tasks.is_empty() {
        return Ok(BuildState::Pending);
    }
    Ok(group_state(tasks.iter().map(|t| t.state_str())))
}

async fn report(st: &AppState, app: &super::api::GithubApp, build: &Build) -> anyhow::Result<()> {
    // its job is still creating its tasks: the group is not whole yet
    if build.tasks.is_none() {
        return Ok(());
    }
    let state = current_state(st, build)?;
    if state == build.state {
        return Ok(());
    }
    let status = json!({
        "state": state.as_str(),
        "target_url": format!("{}/tasks/groups/{}", st.public_url, build.task_group_id),
        "description": format!("TaskGroup: {}", match state {
            BuildState::Success => "Success",
            BuildState::Failure => "Failure",
            BuildState::Pending => "Pending",
            BuildState::Error => "Error",
            BuildState::Cancelled => "Cancelled",
        }),
        "context": format!(
            "{APPLICATION_NAME} ({})",
            build.event_type.split('.').next().unwrap_or_default()
        ),
    });
    // a build that reports through check runs (not made here) only has its state recorded
    if !build.checks {
        let posted = app
            .create_status(
                build.installation_id,
                &build.owner,
                &build.repo,
                &build.sha,
                &status,
            )
            .await;
        match posted {
            Ok(()) => {}
            // GitHub will not take it (no access, no such commit): recorded all the same, so
            // the build is not asked about again every second
            Err(e) if e.is_refusal() => {
                tracing::warn!(error = %e, group = %build.task_group_id, "github: a commit status was refused");
            }
            Err(e) => return Err(e.into()),
        }
    }
    st.github
        .execute(
            Actor::system(GITHUB_CLIENT),
            GithubCommand::SetBuildState {
                task_group_id: build.task_group_id,
                state,
            },
        )
        .await?;
    Ok(())
}
