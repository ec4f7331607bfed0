"""Studies: sweep selection and training settings over one scoring run, every LLS adapter
paired with its same-size random twin trained with the same recipe and seed.

A study is one scoring run (plus optionally its control run, for contrastive ranking, and
other runs of the same pairs scored by other teachers: the teacher axis) and a grid over the
axes in `AXES`. Every combination is a *cell*; a cell is identified by
everything that changes its result, so extending the grid reuses every finished cell. Cells
run one at a time from a persistent queue (`lls.studies.runner`), paper recipe first.

The pieces, one idea each: `config` (axes, config, cells, ids), `store` (the study on
disk), `plan` (how a cell trains: selection, steps, checkpoints, adapter ids), `runner`
(the queue) and `report` (the table, the best cell, confirmations, Chat). This module
gathers their public names for callers that want one import.
"""

from .config import (AXES, AXIS, AXIS_LIST, GRID_FLAGS, PAPER, STUDY_VERSION, Cell,  # noqa: F401
                     StudyConfig, StudyError, cells, make_cell, parse_values, varying_axes)
from .plan import (adapter_ids, cell_status, checkpoint_every, epoch_step,  # noqa: F401
                   group_config, selection_size, steps_per_epoch)
from .report import (best_cell, chat_setup, collapsed, confirm_best, cost,  # noqa: F401
                     describe_sampled, effect_grid, hygiene, memory_check, n_compared,
                     plan_for, recipe, result_best, sampled_at, table, target, teacher)
from .store import (Study, checkpoint_dir, create_study, list_studies, open_study,  # noqa: F401
                    studies_root, teacher_candidates, teacher_name)
