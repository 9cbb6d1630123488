"""The napari plugin of crl-napari: a thin skin over the engine (everything else in ``crl_napari``).

* :mod:`.train_widget` - Train: data (folder or layers), strategy and hyperparameters, Start / Stop / Resume,
  a progress bar and a loss plot; training runs in a napari thread worker over ``pipeline.train_run``. It
  composes train_form (the settings), train_progress (bar, pace, plot) and train_worker (the job, stop, resume;
  frozen_heap keeps Python's full garbage collections off the viewer's objects while a job trains).
* :mod:`.review_widget` - Review masks: the queue (scoring.rank), original and corrected masks on the image, one key per
  decision (A accept, K keep, Q flag, Shift-X exclude, D edit, S save edit, N / Shift-N next / previous, U undo);
  it presents ``review_model.ReviewModel`` through review_table, review_layers, edit_controller, review_keys,
  review_actions and review_controls; every decision is saved at once by ``review.ReviewSession``.
* :mod:`.export_widget` - Export cleaned dataset: the export form (:mod:`.export_form`, also inside Review).
* :mod:`.reader` - opens a dataset folder or a run folder as layers.

The manifest is ``plugin_manifest/napari.yaml`` (packaged as ``crl_napari._manifest``). Nothing outside this
package (and the sample-data hook) may import Qt, napari or magicgui.
"""
