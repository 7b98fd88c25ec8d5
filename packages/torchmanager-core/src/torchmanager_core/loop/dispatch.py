"""The live handles of one run (callbacks, progress, data) and the one route every hook takes.

Who owns what: a `Dispatch` calls the hooks of a run's callbacks. Every hook goes through
`__call__`: a `save_checkpoint` asked for inside any hook is a request, written once every callback
has had the hook (so the file holds every callback's state of one moment, and a request made
before another callback raised is still written); a `StopTraining` from any hook sets the stop
flag. A request made inside an accumulation window is written at the window's end (its update
done), where the run's state is whole on every strategy: FSDP2 keeps a window's gradients inside
itself, unsharded, where no checkpoint can take them. The run's writes (`checkpoint.writes`: single
files, in the background if asked, or shards) belong to the dispatch, which waits for the last one
when the run ends. After a batch or an epoch the processes agree on stopping, and a preemption
signal (SIGTERM, SIGUSR1, or a first Ctrl-C) saves the run, waits for the write and ends it here.
`fit` makes one for the run, `test` one for its own callbacks.
"""

from __future__ import annotations

import math
import signal
from collections.abc import Callable
from typing import Any

from .. import checkpoint, distributed
from ..callbacks import CallbackList
from ..checkpoint.writes import RunWrites, Snapshot
from ..errors import NonFiniteLossError, Preempted, StopTraining
from ..progress import EpochProgress, RunEta, add_console, logger
from .run import Run

__all__ = ["Dispatch"]


class Dispatch:
    """The hooks, progress bar and checkpoint writes of one run.

    Args:
        callbacks: The run's callbacks.
        run: The training run (None for a `test` outside `fit`: saves and stops then do nothing).
        payload: Takes a checkpoint's content now (a `fit`'s; None outside one).
        savable: Whether a checkpoint may be written now (a non-finite loss is never saved).
    Attributes:
        accumulate: Batches per accumulation window (the plan's): a request inside a window waits for its end.
    """

    def __init__(
        self,
        callbacks: CallbackList,
        run: Run | None = None,
        payload: Callable[[], Snapshot] | None = None,
        savable: Callable[[str], bool] | None = None,
    ) -> None:
        self.callbacks = callbacks
        self.run = run
        self.progress: EpochProgress | None = None
        self.eta: RunEta | None = None
        self.accumulate = 1
        self._payload = payload
        self._savable = savable or (lambda path: True)
        self._agreement: Callable[[], list[int]] | None = None  # a stop reduction running in the background
        self._writes = RunWrites()
        self._in_background: set[str] = set()  # requested paths to write in the background

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

    def request(self, path: str, background: bool = False) -> bool:
        """Record a save asked for during a hook (written after it, in the background if asked); whether it was."""
        run = self.run
        if run is None or not run.dispatching:
            return False
        if path not in run.checkpoint_requests:
            run.checkpoint_requests.append(path)
        if background:
            self._in_background.add(path)
        else:
            self._in_background.discard(path)
        return True

    def write_requested(self) -> None:
        """Write the checkpoints asked for so far, unless the run is inside an accumulation window (then at its end)."""
        run = self.run
        if run is None or not run.checkpoint_requests or self._inside_window(run):
            return
        self.flush()

    def flush(self) -> None:
        """Write every checkpoint asked for and not written yet (a stop inside a window writes them where it is)."""
        run = self.run
        if run is None:
            return
        requests, run.checkpoint_requests = run.checkpoint_requests, []
        for path in requests:
            background = path in self._in_background
            self._in_background.discard(path)
            self.write(path, background)

    def _inside_window(self, run: Run) -> bool:
        """Whether the run is between two batches of one accumulation window (its update not done)."""
        return not run.window_done(self.accumulate)

    def write(self, path: str, background: bool = False) -> bool:
        """Write the run's checkpoint at `path` now (in the background: snapshotted now, written by a thread).

        A single file is written by the main process, a sharded model's checkpoint by every process;
        every process learns the outcome. A write waits for the previous background write first.

        Returns:
            Whether it was written or started (False: refused for a non-finite loss, or failed with the
            "continue" policy, this write or the previous background one).
        Raises:
            CheckpointError: The write failed (with the "raise" policy), on every process alike.
        """
        run = self.run
        assert run is not None and self._payload is not None
        if not self._savable(path):
            return False
        if not self._handled(self._writes.write(self._payload(), path, background)):
            return False
        if path not in run.saved_checkpoints:
            run.saved_checkpoints.append(path)
        return True

    def close_writes(self) -> None:
        """Wait for the run's last background write (the run ends); its error as a write's (`on_checkpoint_error`)."""
        self._handled(self._writes.close())

    def _handled(self, error: Exception | None) -> bool:
        """Whether a write went well; its error raised, or logged with the "continue" policy."""
        if error is None:
            return True
        run = self.run
        assert run is not None
        if not (run.on_checkpoint_error == "continue" and isinstance(error, checkpoint.CheckpointError)):
            raise error
        if distributed.is_main_process():
            add_console()
            logger.error(f"Checkpoint not saved, training goes on (on_checkpoint_error='continue'): {error}")
        return False

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
        self.close_writes()  # every write done before the process exits
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
