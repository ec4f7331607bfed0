"""Studies: sweeps over selection and training settings where every LLS adapter has its
same-size random twin, run as a resumable queue."""

from .config import StudyConfig, StudyError
from .report import best_cell, confirm_best, table
from .runner import run_study, submit_study
from .store import create_study, list_studies, open_study

__all__ = ["StudyConfig", "StudyError", "best_cell", "confirm_best", "create_study",
           "list_studies", "open_study", "run_study", "submit_study", "table"]
