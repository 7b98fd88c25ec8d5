"""The loop: a run from `fit` to `on_train_end`, and the passes of `test` and `predict`.

Modules: `fit` (the loop, top to bottom), `epoch` (one resumable pass for training, validation
and test), `run` (where the run is, and its checkpoint state), `plan` (the once-per-run
decisions), `dispatch` (callbacks, progress and checkpoint writes of one run: the one hook route),
`update` (backward and the optimizer update), `evaluate` (`test`, `predict`), `checks` (argument
checks), `protocol` (what the loop sees of a manager: it never imports the manager's module).
"""
