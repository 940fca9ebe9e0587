"""Weight averaging (``train.ema``): an exponential moving average of the weights a stage
trains, as Ultralytics' ``ModelEMA`` keeps one (there of the whole state dict). After update
n (n = 1, 2, ...) every average a of a weight w is

    d_n = decay * (1 - exp(-n / warmup));  a <- d_n * a + (1 - d_n) * w

so the first updates follow the weights closely and the average's memory grows to about
1 / (1 - decay) updates. The averages and n are variables in ``WeightAverage.trackable``: a
checkpoint that holds it restores them bit for bit."""

import contextlib

import keras
import tensorflow as tf


def _tensor(variable):
    """The ``tf.Variable`` behind a Keras variable (or the variable itself)."""
    return variable.value if isinstance(variable, keras.Variable) else variable


class WeightAverage:
    """The moving averages of ``variables`` (the stage's trainable variables), starting
    from their current values.

    Args:
      variables: Keras or TF variables, float32.
      decay: the decay the average approaches.
      warmup: Ultralytics' tau: the updates over which the decay ramps up.
    """

    def __init__(self, variables, decay, warmup):
        self.decay = float(decay)
        self.warmup = float(warmup)
        self._weights = list(variables)
        self.updates = tf.Variable(0, dtype=tf.int64, trainable=False, name="updates")
        self.averages = [
            tf.Variable(tf.identity(_tensor(v)), trainable=False, name="average")
            for v in self._weights
        ]
        # What a checkpoint keeps (the weights themselves are the model's to save).
        self.trackable = tf.train.Checkpoint(updates=self.updates, averages=self.averages)
        # ``update()``: one update, after a training step.
        self.update = tf.function(self._update_averages)

    def decay_at(self, updates):
        """d_n for update ``updates`` (a float or a tensor)."""
        return self.decay * (1.0 - tf.exp(-tf.cast(updates, tf.float32) / self.warmup))

    def _update_averages(self):
        self.updates.assign_add(1)
        d = self.decay_at(self.updates)
        for average, weight in zip(self.averages, self._weights):
            average.assign(d * average + (1.0 - d) * _tensor(weight))

    @contextlib.contextmanager
    def swapped(self):
        """Within: the weights hold the averages; after: their own values again."""
        own = [tf.identity(_tensor(w)) for w in self._weights]
        self.copy_to_weights()
        try:
            yield
        finally:
            for weight, value in zip(self._weights, own):
                weight.assign(value)

    def copy_to_weights(self):
        """The weights take the averages' values (the stage's result)."""
        for weight, average in zip(self._weights, self.averages):
            weight.assign(average)
