"""The live handles of one run (callbacks, progress, data) and the one route every hook takes.

Who owns what: a `Dispatch` calls the hooks of a run's callbacks. Every hook goes through
`__call__`: a `save_checkpoint` asked for inside any hook is a request, written once every callback
has had the hook (so the file holds every callback's state of one moment, and a request made
before another callback raised is still written); a `StopTraining` from any hook sets the stop
flag. After a batch or an epoch the processes agree on stopping, and a preemption signal (SIGTERM,
SIGUSR1, or a first Ctrl-C) saves the run and ends it here. `fit` makes one for the run, `test`
one for its own callbacks.
"""

from __future__ import annotations

import math
import signal
from collections.abc import Callable
from typing import Any

from .. import checkpoint, distributed
from ..callbacks import CallbackList
from ..errors import NonFiniteLossError, Preempted, StopTraining
from ..progress import EpochProgress, RunEta, add_console, logger
from .run import Run

__all__ = ["Dispatch"]


class Dispatch:
    """The hooks, progress bar and checkpoint writes of one run.

    Args:
        callbacks: The run's callbacks.
        run: The training run (None for a `test` outside `fit`: saves and stops then do nothing).
        payload: Builds a checkpoint's content (a `fit`'s; None outside one).
        savable: Whether a checkpoint may be written now (a non-finite loss is never saved).
    """

    def __init__(
        self,
        callbacks: CallbackList,
        run: Run | None = None,
        payload: Callable[[], dict[str, Any]] | None = None,
        savable: Callable[[str], bool] | None = None,
    ) -> None:
        self.callbacks = callbacks
        self.run = run
        self.progress: EpochProgress | None = None
        self.eta: RunEta | None = None
        self._payload = payload
        self._savable = savable or (lambda path: True)
        self._agreement: Callable[[], list[int]] | None = None  # a stop reduction running in the background

    def uses(self, hook: str) -> bool:
        """Whether a callback overrides `hook` (the loop skips the hooks nobody uses)."""
        return self.callbacks.uses(hook)

    def __call__(self, hook: str, *args: Any, **kwargs: Any) -> None:
        """Call `hook` on every callback using it; then write the checkpoints asked for during it."""
        if not self.callbacks.uses(hook):
            return
        run = self.run
        if run is None:
            self._call(hook, args, kwargs)
            return
        run.dispatching = True
        try:
            self._call(hook, args, kwargs)
        finally:
            run.dispatching = False
            self.write_requested()

    def _call(self, hook: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        try:
            getattr(self.callbacks, hook)(*args, **kwargs)
        except StopTraining as stop:
            if self.run is not None:
                self.run.stop = True
            if stop.args:
                logger.info(str(stop.args[0]))

    # -- checkpoints -------------------------------------------------------------------------

    def request(self, path: str) -> bool:
        """Record a save asked for during a hook (written after it); whether it was recorded."""
        run = self.run
        if run is None or not run.dispatching:
            return False
        if path not in run.checkpoint_requests:
            run.checkpoint_requests.append(path)
        return True

    def write_requested(self) -> None:
        """Write the checkpoints asked for during the hook just called."""
        run = self.run
        if run is None:
            return
        requests, run.checkpoint_requests = run.checkpoint_requests, []
        for path in requests:
            self.write(path)

    def write(self, path: str) -> bool:
        """Write the run's checkpoint at `path` now (the main process writes, every process learns the outcome).

        Returns:
            Whether it was written (False: refused for a non-finite loss, or failed with the "continue" policy).
        Raises:
            CheckpointError: The write failed (with the "raise" policy), on every process alike.
        """
        run = self.run
        assert run is not None and self._payload is not None
        if not self._savable(path):
            return False
        payload = self._payload()
        error = distributed.on_main_process(lambda: checkpoint.save(payload, path))
        if error is not None:
            if not (run.on_checkpoint_error == "continue" and isinstance(error, checkpoint.CheckpointError)):
                raise error
            if distributed.is_main_process():
                add_console()
                logger.error(f"Checkpoint not saved, training goes on (on_checkpoint_error='continue'): {error}")
            return False
        if path not in run.saved_checkpoints:
            run.saved_checkpoints.append(path)
        return True

    # -- stopping ----------------------------------------------------------------------------

    def agree(self, at_update: bool) -> None:
        """Make every process stop if any does; at an optimizer-update boundary, act on a preemption signal.

        A signal makes the run save to the callbacks' preemption checkpoints and end: `Preempted`
        for SIGTERM and SIGUSR1, `KeyboardInterrupt` for Ctrl-C (SIGINT).
        """
        run = self.run
        assert run is not None
        self.settle()
        signum = run.signal if at_update and run.signal is not None else 0
        stop, signum = distributed.max_over_processes([int(run.stop), signum])
        run.stop = bool(stop or signum)
        if signum:
            self.preempt(signum)

    def agree_after_batch(self, at_update: bool) -> bool:
        """Whether every process stops after this batch, under torchrun, without waiting on a collective.

        The processes' stop flags and signals of the previous batch were reduced in the background since;
        that result decides now (a stop asked for between two batches ends every process one batch
        later, at the same batch; a signal is acted on at the first optimizer-update boundary after every
        process knows of it), and this batch's flags start their own reduction.
        """
        run = self.run
        assert run is not None
        pending, self._agreement = self._agreement, None
        if pending is not None:
            stop, signum = pending()
            if signum:
                run.signal = run.signal or signum  # every process carries it until the boundary
                if at_update:
                    run.stop = True
                    self.preempt(signum)
            if stop:
                run.stop = True
                return True
        self._agreement = distributed.start_max_over_processes([int(run.stop), run.signal or 0])
        return False

    def settle(self) -> None:
        """Wait for a reduction `agree_after_batch` started (its result is for the batch it was started at)."""
        pending, self._agreement = self._agreement, None
        if pending is not None:
            stop, signum = pending()
            run = self.run
            assert run is not None
            run.stop = run.stop or bool(stop)
            run.signal = run.signal or signum or None

    def preempt(self, signum: int) -> None:
        """Save the run where every process stopped for signal `signum`, log where in one line, and end it."""
        run = self.run
        assert run is not None
        run.signal = None  # acted on: not raised again when `fit` ends
        self.close_progress()
        paths = self.callbacks.preemption_checkpoints()
        saved = [path for path in paths if self.write(path)]
        interrupted = signum == signal.SIGINT
        ending: BaseException = KeyboardInterrupt() if interrupted else Preempted(signum, saved)
        if distributed.is_main_process():
            where = (
                f"after batch {run.batch} of epoch {run.epoch + 1}" if run.batch else f"at the end of epoch {run.epoch}"
            )
            if saved:
                outcome = f"the run was saved to {', '.join(saved)}"
            elif paths:
                outcome = f"the run was not saved (writing {', '.join(paths)} failed)"
            else:
                outcome = "nothing was saved (no LastCheckpoint or Experiment in `callbacks_list`)"
            name = "Ctrl-C (SIGINT)" if interrupted else signal.Signals(signum).name
            exit_code = "raising KeyboardInterrupt" if interrupted else f"exiting with code {128 + signum}"
            again = " Run the same command again to resume." if saved else ""
            add_console()
            logger.warning(
                f"{name} received: training stopped {where} (optimizer update {run.global_step}), {outcome}; "
                f"{exit_code}.{again}"
            )
        raise ending

    def nonfinite(self, epoch: int, loss: float, consequence: str = "") -> None:
        """Raise `NonFiniteLossError`, or with the "stop" policy log the error and stop training."""
        run = self.run
        assert run is not None
        message = (
            f"The training loss of epoch {epoch + 1} is {loss}{consequence}; lower the learning rate, clip gradients or "
            "check the data for NaN/inf values, or pass `on_nonfinite_loss='stop'` to stop cleanly instead."
        )
        if run.on_nonfinite == "stop":
            logger.error(message)
            run.stop = True
        else:
            raise NonFiniteLossError(message)

    def check_loss(self, epoch: int, summary: dict[str, float]) -> None:
        """Act on a non-finite epoch loss (`on_nonfinite_loss`)."""
        loss = summary.get("loss", 0.0)
        if not math.isfinite(loss):
            self.nonfinite(epoch, loss)

    # -- progress ----------------------------------------------------------------------------

    def close_progress(self, summary: dict[str, float] | None = None) -> bool:
        """Close the epoch's progress bar with `summary`; whether a bar was drawn (then it showed the summary)."""
        progress, self.progress = self.progress, None
        if progress is None:
            return False
        progress.close(summary)
        return progress.enabled
