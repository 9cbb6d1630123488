"""The run folder: everything one training run leaves, so training can happen on a GPU server and review on
a laptop (layout in docs/internals.md). This package is the only code that knows its files' names and
formats; it checks everything it reads (a run folder may come from anyone), resolves every write inside
the run, holds the writer lock and keeps history, checkpoint and scores in step. A package, not one module,
because those are seven concerns: names, checked settings, typed rows, the lock, the resume path, review rounds,
scoring's progress.
"""

from . import names as _names
from .checks import MAX_DEPTH, MAX_SIZE, MAX_WIDTH
from .errors import RunError, RunLocked
from .folder import RunFolder, inside, read_score_rows, versions
from .lock import is_locked, writer_lock
from .names import *  # noqa: F403  (the file names are this package's API: names.__all__)
from .resume import Resume, check_belongs, checkpoint_meta, data_diff, open_for_resume, settings_diff
from .rounds import (
    CORRECTED,
    Round,
    current_round,
    keep_round_files,
    promote,
    read_round_decisions,
    read_rounds,
    round_dir,
    round_test_dice,
    write_round_start,
    write_rounds,
)
from .rows import CaseRow, HistoryRow, ScoreRow, csv_text, epoch_line, paused_gc
from .score_progress import ScoreProgress, fingerprint

__all__ = [*_names.__all__,
    "MAX_DEPTH", "MAX_SIZE", "MAX_WIDTH", "CaseRow", "HistoryRow", "Resume", "RunError", "RunFolder", "RunLocked",
    "ScoreRow", "check_belongs", "checkpoint_meta", "csv_text", "data_diff", "epoch_line", "inside", "is_locked",
    "paused_gc", "ScoreProgress", "fingerprint",
    "open_for_resume", "read_score_rows", "settings_diff", "versions", "writer_lock",
    "CORRECTED", "Round", "current_round", "keep_round_files", "promote", "read_round_decisions", "read_rounds",
    "round_dir", "round_test_dice", "write_round_start", "write_rounds",
]
