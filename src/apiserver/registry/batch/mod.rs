//! The batch group (`/apis/batch/v1`): jobs and the cron jobs that make them.

pub mod cronjobs;
pub mod jobs;
