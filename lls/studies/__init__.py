"""Studies: sweeps over selection and training settings where every LLS adapter has its
same-size random twin, run as a resumable queue."""

from .runner import run_study, submit_study
from .study import StudyConfig, StudyError, best_cell, create_study, list_studies, open_study, table

__all__ = ["StudyConfig", "StudyError", "best_cell", "create_study", "list_studies", "open_study",
           "run_study", "submit_study", "table"]
