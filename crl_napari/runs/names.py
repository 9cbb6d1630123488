"""The run folder's file names: the one place that spells them. Everything else asks :mod:`crl_napari.runs`."""

__all__ = [
    "CONFIG",
    "CHECKPOINT",
    "CASES",
    "HELD_OUT",
    "HISTORY",
    "SCORES",
    "REVIEW",
    "EVALUATION",
    "LOCK",
    "IMAGES",
    "GIVEN",
    "CORRECTED",
    "EDITS",
    "PROB16",
    "NETS16",
    "DATA_ROOT",
    "HISTORY_FIELDS",
    "SCORE_FIELDS",
    "CASE_FIELDS",
    "HELD_OUT_FIELDS",
    "BEFORE_TRAINING",
    "ROUNDS",
    "ROUNDS_DIR",
    "ROUND_DECISIONS",
    "ROUND_FILES",
    "SCORING",
    "ROUND_MASKS",
    "ROUND_LABELS",
    "CACHE",
    "CACHE_INDEX",
    "CACHE_IMAGES",
    "CACHE_MASKS",
    "CACHE_GIVEN",
    "SCORE_PART",
    "SCORE_PARTS",
    "SCORE_PROGRESS",
    "SUMMARY",
    "UNDO",
]

CONFIG = "config.json"
CHECKPOINT = "checkpoint.pt"
CASES = "cases.csv"
HELD_OUT = "held_out.csv"  # the cases of other splits (test): not trained on, exported unchanged
HISTORY = "history.csv"
SCORES = "scores.csv"
REVIEW = "review.json"
EVALUATION = "evaluation.json"
LOCK = ".crl-napari.lock"  # the writer lock (train, resume, score); holds who has it
IMAGES = "images"  # display copies of the training images (uint8, training size)
GIVEN = "given"  # the masks training saw
CORRECTED = "corrected"  # corrected masks, probability and uncertainty maps
EDITS = "edits"  # the reviewer's own masks (at the original size; older runs: training size)
UNDO = ".undo"  # in edits/: the drawings an edit replaced, kept for undo (<id>.<token>.png)
SUMMARY = "summary.png"  # the summary figure (crl_napari.report; `crl-napari report`)
DATA_ROOT = "data_root.json"  # {"root": folder}: where the originals are now, when the data moved (set in review)
PROB16 = "_prob16.png"  # in corrected/: <id>_prob16.png, the sharpened probability in 16 bits; corrections at the
#                        radiograph's own size are resampled from it (crl_napari.native)
NETS16 = "_nets16.png"  # in corrected/ (border fit on): the nets' own sharpened probability in 16 bits, which the
#                        correction at the radiograph's own size moves the original mask's border with
#                        (crl_napari.native_correction)
CACHE = "cache"  # the decoded training data (crl_napari.cache): rebuilt from the data folder when gone
CACHE_INDEX = "index.json"  # in cache/: what each slot holds and the fingerprint of its source files
CACHE_IMAGES = "images.u8"  # in cache/: uint8 (N, size, size), the images at training size, before z-scoring
CACHE_MASKS = "masks.u8"  # in cache/: uint8 (N, size, size) {0, 1}, the masks of the data folder
CACHE_GIVEN = "given.u8"  # in cache/: uint8 (N_train, size, size) {0, 1}, the masks training sees (noise applied)

ROUNDS = "rounds.json"  # review rounds: the current round, when each started, from which decisions
ROUNDS_DIR = "rounds"  # rounds/<n>/: round n's own copies of ROUND_FILES (the current round also at the top)
ROUND_DECISIONS = "decisions.json"  # in rounds/<n>/: the decisions round n trained with ({id: status})
#: what the last scoring found besides the per-image scores: {"size_offset": the size calibration's logit offset,
#: null where the run does not calibrate}; written just before scores.csv (absent: scored before it existed)
SCORING = "scoring.json"
ROUND_FILES = (CONFIG, HISTORY, CHECKPOINT, SCORES, SCORING, EVALUATION)  # what a round keeps of its own
ROUND_MASKS = "masks.u8"  # in rounds/<n>/ while round n trains: uint8 (N_trained, size, size), the masks it sees
#: in rounds/<n>/ of a finished second pass on every correction: its masks.u8 kept (every case, cases.csv order),
#: the labels a later warm round trains the images nobody decided on with (crl_napari.rounds.pending_labels)
ROUND_LABELS = "labels.u8"
#: scoring under torchrun: each rank's part (a temporary file rank 0 merges into scores.csv and corrected/, then
#: removes), by rank and world size; SCORE_PARTS matches every one of them
SCORE_PART = ".score-part-{rank}-of-{world}.npz"
SCORE_PARTS = ".score-part-*-of-*.npz"
#: scoring's chunks so far (runs.score_progress): a stopped or killed scoring goes on from them; removed once
#: scores.csv is written
SCORE_PROGRESS = ".scoring"

HISTORY_FIELDS = ["epoch", "stage", "loss_0", "loss_1", "loss_2", "selected", "lr", "seconds", "val_dice", "keep"]
SCORE_FIELDS = ["id", "rank", "suspicion", "uncertainty", "disagreement", "dice_given_corrected", "corrupted",
                "extra_pieces"]  # extra_pieces: absent in runs scored before it (read as 0)
CASE_FIELDS = ["id", "split", "image_path", "mask_path", "orig_h", "orig_w", "corrupted", "noise_op", "noise_n"]
HELD_OUT_FIELDS = ["id", "split", "image_path", "mask_path", "orig_h", "orig_w"]
#: what a run holds before its first checkpoint: a new run may start over a folder holding only these
BEFORE_TRAINING = {CONFIG, CASES, HELD_OUT, HISTORY, IMAGES, GIVEN, CORRECTED, LOCK, CACHE}
