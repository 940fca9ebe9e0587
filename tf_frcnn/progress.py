"""What a long job prints while it runs, readable in a terminal and in a log file alike.

``progress`` (what training and evaluation take) is False (silent), True or "auto" (Keras'
progress bars when stdout is a terminal, else lines), "bar" or "lines". Lines are plain text,
one every ``every`` steps (stage, step/total, each loss, learning rate, speed, ETA) and one per
validation, with no carriage return, backspace or ANSI escape: Keras' bar redraws itself with
them whenever ``sys.modules`` has ``posix``, even into a file. Like Ultralytics' and detectron2's
loggers, a line starts with what it is about and reads alone.

``own_lines()`` (the CLI wraps each command in it) keeps any other message off a bar's line, and
``one_line_warnings()`` shows a Python warning as one line naming its file, without the source
line Python echoes.
"""

import contextlib
import sys
import time
import warnings

import keras

FORMATS = ("auto", "bar", "lines")
# A line per this many steps when the caller names no other (config key train.log_every).
DEFAULT_EVERY = 50


def resolve_format(progress):
    """ "bar", "lines" or None (silent) for a ``progress`` value (see the module docstring)."""
    if progress is False or progress is None:
        return None
    name = "auto" if progress is True else progress
    if name not in FORMATS:
        raise ValueError(f"log format {name!r} must be one of {', '.join(FORMATS)}")
    if name == "auto":
        return "bar" if hasattr(sys.stdout, "isatty") and sys.stdout.isatty() else "lines"
    return name


def duration(seconds):
    """ "42s", "3:07" or "1:02:03"."""
    seconds = int(round(max(seconds, 0)))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}:{seconds:02d}"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}"


def _number(value):
    return f"{value:.4f}" if 1e-3 <= abs(value) < 1e4 else f"{value:.3g}"


class _Silent:
    def step(self, step, steps, losses):
        pass

    def validation(self, step, steps, row, best):
        pass

    def message(self, text):
        pass

    def close(self, step):
        pass


class _Lines(_Silent):
    """One plain line every ``every`` steps and at a stage's last step."""

    def __init__(self, name, start_step, every, learning_rate):
        self.name = name
        self.every = every
        self.learning_rate = learning_rate
        self.start_step = start_step
        self.started = time.perf_counter()

    def _rate(self, step):
        done = step - self.start_step
        return (time.perf_counter() - self.started) / done if done > 0 else 0.0

    def step(self, step, steps, losses):
        if step % self.every and step != steps:
            return
        per_step = self._rate(step)
        parts = [f"{self.name} step {step}/{steps}"]
        parts += [f"{name} {_number(value)}" for name, value in losses.items()]
        if self.learning_rate is not None:
            parts.append(f"lr {self.learning_rate():.3g}")
        parts.append(f"{per_step:.2f} s/step")
        parts.append(f"ETA {duration(per_step * (steps - step))}")
        print("  ".join(parts), flush=True)

    def validation(self, step, steps, row, best):
        values = ", ".join(f"{k} {_number(v)}" for k, v in row.items() if k != "step")
        print(f"{self.name} validation at step {step}/{steps}: {values}; {best}", flush=True)

    def message(self, text):
        print(text, flush=True)


class _Bar(_Lines):
    """Keras' progress bar; a validation or message goes on a line of its own above it."""

    def __init__(self, name, start_step, steps, metric, learning_rate):
        super().__init__(name, start_step, DEFAULT_EVERY, learning_rate)
        self.metric = metric
        self.bar = keras.utils.Progbar(
            steps, stateful_metrics=[metric] if metric else None, unit_name="step"
        )
        self.bar.update(start_step)
        self.open = True
        self.shown = None

    def step(self, step, steps, losses):
        self.bar.target = steps
        values = list(losses.items())
        if self.shown is not None:
            values.append(self.shown)
        self.bar.update(step, values=values)
        self.open = step < steps

    def _new_line(self):
        if self.open:
            sys.stdout.write("\n")
            self.open = False

    def validation(self, step, steps, row, best):
        self.shown = (f"val_{self.metric}", row[self.metric])
        self._new_line()
        super().validation(step, steps, row, best)

    def message(self, text):
        self._new_line()
        print(text, flush=True)

    def close(self, step):
        self._new_line()


def stage_progress(
    progress, name, steps, start_step, *, every=None, learning_rate=None, metric=None
):
    """The reporter of a training stage ``name`` of ``steps`` steps resuming at ``start_step``:
    ``.step(step, steps, losses)`` after each step (``steps`` may change: a time budget's refit),
    ``.validation(step, steps, row, best)`` with a validation row and a note on the best value,
    ``.message(text)``, ``.close(step)``. ``learning_rate()`` returns the current rate;
    ``metric`` is the validation value the bar shows."""
    mode = resolve_format(progress)
    if mode is None:
        return _Silent()
    if mode == "bar":
        return _Bar(name, start_step, steps, metric, learning_rate)
    return _Lines(name, start_step, every or DEFAULT_EVERY, learning_rate)


class BatchProgress:
    """Progress over batches of unknown number (an evaluation): a bar that ends its line when
    closed, or a line every ``every`` batches and one at the end."""

    def __init__(self, progress, name="eval", every=DEFAULT_EVERY):
        self.mode = resolve_format(progress)
        self.name = name
        self.every = every
        self.count = 0
        self.started = time.perf_counter()
        self.bar = keras.utils.Progbar(None, unit_name="batch") if self.mode == "bar" else None

    def update(self, count):
        self.count = count
        if self.bar is not None:
            self.bar.update(count)
        elif self.mode == "lines" and count % self.every == 0:
            print(f"{self.name}: {count} batches, {self._per_batch():.2f} s/batch", flush=True)

    def _per_batch(self):
        return (time.perf_counter() - self.started) / max(self.count, 1)

    def close(self):
        if self.bar is not None:
            self.bar.update(self.count, finalize=True)
        elif self.mode == "lines":
            seconds = time.perf_counter() - self.started
            print(f"{self.name}: {self.count} batches in {duration(seconds)}", flush=True)


class _GuardedStream:
    """A stream whose writes start on a new line while ``state['open']`` says a progress bar's
    line (on stdout) is unfinished; a bar's own redraws start with "\\b" or "\\r"."""

    def __init__(self, stream, state, is_stdout):
        self._stream = stream
        self._state = state
        self._is_stdout = is_stdout

    def write(self, text):
        if text and self._state["open"] and not text.startswith(("\r", "\b", "\n")):
            self._state["stdout"].write("\n")
            self._state["stdout"].flush()
            self._state["open"] = False
        written = self._stream.write(text)
        if text and self._is_stdout:
            self._state["open"] = not text.endswith("\n")
        return written

    def __getattr__(self, name):
        return getattr(self._stream, name)


@contextlib.contextmanager
def own_lines():
    """Inside it, a message printed (to stdout or stderr) while a progress bar's line is
    unfinished starts on a new line instead of being glued to the bar."""
    stdout, stderr = sys.stdout, sys.stderr
    state = {"open": False, "stdout": stdout}
    sys.stdout = _GuardedStream(stdout, state, True)
    sys.stderr = _GuardedStream(stderr, state, False)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = stdout, stderr


def format_warning(message, category, filename, lineno, line=None):
    """One line: "warning: <message> (<Category>, <file>:<line>)"; a tf_frcnn warning (a data
    reader's, naming its data file) is written for the user and goes alone."""
    text = " ".join(str(message).split())
    if category.__module__.split(".")[0] == "tf_frcnn":
        return f"warning: {text}\n"
    where = filename.replace("\\", "/").rsplit("/", 1)[-1]
    return f"warning: {text} ({category.__name__}, {where}:{lineno})\n"


def _show_warning(message, category, filename, lineno, file=None, line=None):
    stream = file or sys.stderr
    with contextlib.suppress(OSError, AttributeError):
        stream.write(format_warning(message, category, filename, lineno))


@contextlib.contextmanager
def one_line_warnings():
    """Inside it, Python warnings print as ``format_warning`` lines (no source-line echo)."""
    shown, formatted = warnings.showwarning, warnings.formatwarning
    warnings.showwarning, warnings.formatwarning = _show_warning, format_warning
    try:
        yield
    finally:
        warnings.showwarning, warnings.formatwarning = shown, formatted
