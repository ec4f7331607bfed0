"""Background jobs that survive reloads and restarts: submit, list, cancel, progress, and the
memory a job will need."""

from .store import (ACTIVE, ENV_JOB_DIR, Job, JobError, JobStore, ProgressReporter, cancel,
                    cancel_requested, delete, get, list_jobs, log_event, progress, read_events,
                    read_log, report_phase, report_progress, submit, wait)

__all__ = ["ACTIVE", "ENV_JOB_DIR", "Job", "JobError", "JobStore", "ProgressReporter", "cancel",
           "cancel_requested", "delete", "get", "list_jobs", "log_event", "progress",
           "read_events", "read_log", "report_phase", "report_progress", "submit",
           "wait"]
