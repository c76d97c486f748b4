"""The progress bar :class:`ProgressBar` (fit's ``verbose``) and :func:`_message`, which
prints a callback's message below a live progress line."""
import io
import os
import sys
import time

from fastprop.callbacks._base import Callback, _check_bool, _fmt_time, _fmt_value


_now = time.perf_counter   # module-level so tests can substitute a fake clock


def _message(text):
    """Print a callback's message on its own line, breaking a live progress line first."""
    bar = ProgressBar._open_line
    if bar is not None:
        bar._break_line()
    print(text, file=sys.stdout, flush=True)


class ProgressBar(Callback):
    """Training progress on ``file`` (``sys.stdout`` by default, looked up when writing).

    On a terminal, one line per epoch redrawn in place (at most every 0.1 s, and after the last
    batch)::

        Epoch 3/10 [=========>..........] 45/90 - loss 0.1234 - 12,345 samples/s - ETA 0.8s

    and finished with the epoch's logs and time::

        Epoch 3/10 [====================] 90/90 - loss 0.1201 - val_loss 0.1377 - lr 0.001
        - 1.6s - 56,250 samples/s                                          (on one line)

    Elsewhere (a file, a pipe, a notebook capture) exactly one line per epoch, written when the
    epoch ends.

    Parameters
    ----------
    file : file-like, optional
        Anything with ``write`` (and ideally ``flush`` and ``isatty``). Default: ``sys.stdout``
        at the time of writing.
    live : bool, optional
        Force the live bar (True) or one line per epoch (False). Default: live when
        ``file.isatty()``.
    """

    width = 20               # characters in the bar
    interval = 0.1           # seconds between redraws of the live line
    _open_line = None        # the ProgressBar whose live line awaits its newline, if any

    def __init__(self, file=None, live=None):
        if file is not None and not callable(getattr(file, "write", None)):
            raise TypeError(f"file must have a write() method, got {type(file).__name__}")
        if live is not None:
            live = _check_bool(live, "live")
        self.file = file
        self.live = live
        self._live = False
        self._line_len = 0

    def _out(self):
        return self.file if self.file is not None else sys.stdout

    def _write(self, text):
        out = self._out()
        out.write(text)
        flush = getattr(out, "flush", None)
        if flush is not None:
            flush()

    def on_train_begin(self, logs=None):
        if self.live is not None:
            self._live = self.live
        else:
            try:
                self._live = bool(self._out().isatty())
            except (AttributeError, ValueError, OSError):
                self._live = False

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._t0 = _now()
        self._t_last_batch = None
        self._last_draw = self._t0
        self._seen = 0
        self._batches = 0
        self._loss_sum = 0.0
        self._loss_weight = 0

    def on_train_batch_end(self, batch, logs=None):
        logs = logs or {}
        size = logs.get("size", 1)
        loss = logs.get("loss")
        self._batches = batch + 1
        self._seen += size
        if loss is not None:
            self._loss_sum += float(loss) * size
            self._loss_weight += size
        now = self._t_last_batch = _now()
        if self._live and (now - self._last_draw >= self.interval
                           or self._batches == self.params.get("steps")):
            self._last_draw = now
            self._draw(self._progress_line(now))

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        now = _now()
        elapsed = now - getattr(self, "_t0", now)
        train_time = (self._t_last_batch - self._t0) if getattr(self, "_t_last_batch", None) \
            else elapsed
        seen = getattr(self, "_seen", 0) or self.params.get("n_samples") or 0
        if "loss" not in logs and getattr(self, "_loss_weight", 0):
            logs = {"loss": self._loss_sum / self._loss_weight, **logs}
        parts = [self._head(epoch)]
        if self._live:
            parts[0] += " " + self._bar(self._batches)
        parts += [f"{k} {_fmt_value(v, k)}" for k, v in logs.items()]
        parts.append(_fmt_time(elapsed))
        if train_time > 0 and seen:
            parts.append(f"{seen / train_time:,.0f} samples/s")
        line = " - ".join(parts)
        if self._live:
            self._draw(line, final=True)
        else:
            self._write(line + "\n")

    def on_train_end(self, logs=None):
        if ProgressBar._open_line is self:
            self._break_line()

    # -- drawing -----------------------------------------------------------------------------
    def _head(self, epoch):
        epochs = self.params.get("epochs")
        return f"Epoch {epoch + 1}/{epochs}" if epochs else f"Epoch {epoch + 1}"

    def _bar(self, done, width=None):
        steps = self.params.get("steps")
        if not steps:
            return f"{done}"
        width = self.width if width is None else width
        filled = min(width, width * done // steps)
        if filled < width:
            bar = "=" * filled + ">" + "." * (width - filled - 1)
        else:
            bar = "=" * width
        return f"[{bar}] {done}/{steps}"

    def _progress_line(self, now):
        """The live line; the bar narrows (to 5 characters) before the line is cut to fit."""
        parts = [""]
        if self._loss_weight:
            parts.append(f"loss {_fmt_value(self._loss_sum / self._loss_weight)}")
        elapsed = now - self._t0
        if elapsed > 0:
            parts.append(f"{self._seen / elapsed:,.0f} samples/s")
        steps = self.params.get("steps")
        if steps and self._batches:
            remaining = max(steps - self._batches, 0) * elapsed / self._batches
            parts.append(f"ETA {_fmt_time(remaining)}")
        head = self._head(self._epoch)
        parts[0] = f"{head} {self._bar(self._batches)}"
        line = " - ".join(parts)
        excess = len(line) - (self._columns() - 1)
        if excess > 0 and self.params.get("steps"):
            parts[0] = f"{head} {self._bar(self._batches, max(self.width - excess, 5))}"
            line = " - ".join(parts)
        return line

    def _columns(self):
        try:
            columns = os.get_terminal_size(self._out().fileno()).columns
        except (AttributeError, ValueError, OSError, TypeError, io.UnsupportedOperation):
            columns = 0
        return columns if columns > 0 else 80     # a pty with no size reports 0

    def _draw(self, line, final=False):
        """Redraw the live line (final: the epoch's last redraw, ended by a newline)."""
        if not final:
            line = line[:max(self._columns() - 1, 20)]
        pad = " " * max(self._line_len - len(line), 0)
        if final:
            self._write("\r" + line + pad + "\n")
            self._line_len = 0
            ProgressBar._open_line = None
        else:
            self._write("\r" + line + pad)
            self._line_len = len(line)
            ProgressBar._open_line = self

    def _break_line(self):
        """End the live line so a message can be printed below it."""
        self._write("\n")
        self._line_len = 0
        if ProgressBar._open_line is self:
            ProgressBar._open_line = None

    def __repr__(self):
        return f"ProgressBar(file={self.file!r}, live={self.live!r})"
