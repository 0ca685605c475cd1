"""FastPredictor: P(positive) in numpy, running only each row's own tokens from the
padding states precomputed for every prefix length."""

from __future__ import annotations

import numpy as np

from core.config import TrainConfig
from core.fast.cells import _Layer, _one_blas_thread
from core.fast.plan import Plan, inference_plan

# The predictor computes every step's input projection in one go up to this many bytes
# (a typed review), else step by step (large batches such as attribution's).
PROJECT_ALL_BYTES = 8 << 20


class FastPredictor:
    """P(positive) for padded rows, running only each row's own tokens (numpy).

    Built once per loaded model: the states after k padding codes, for every k, come from
    the model's weights; predict_padded then starts each row from its own prefix state.
    Dropout layers are identities at inference, so dropout models are exact here too.
    """

    def __init__(self, plan: Plan):
        self.plan = plan
        self.maxlen, self.steps = plan.maxlen, plan.steps
        emb = np.asarray(plan.embedding.embeddings, np.float32)
        self.layers: list[_Layer] = [_Layer.of(kind, layer) for kind, layer in plan.recurrent]
        self.head_w = np.asarray(plan.head.kernel, np.float32)[:, 0]
        self.head_b = float(np.asarray(plan.head.bias, np.float32)[0])
        if plan.conv is None:
            first = self.layers[0]
            first.table = emb @ first.kernel + first.bias  # input projection per code
        else:
            k = np.asarray(plan.conv.kernel, np.float32)  # (kernel, E, F)
            # Per tap, each code's contribution; a final zero row stands for 'same' padding.
            self.taps = np.stack([np.vstack([emb @ k[j], np.zeros((1, k.shape[2]), np.float32)])
                                  for j in range(k.shape[0])])
            self.conv_bias = np.asarray(plan.conv.bias, np.float32)
            self.conv_act = plan.conv.activation
        with _one_blas_thread(), np.errstate(over="ignore"):
            self._pad_states()
        if plan.pool == "max":  # after k padding steps, the max of the top layer's states
            top = self.layers[-1].pad_h
            self.pad_max = np.vstack([np.full((1, top.shape[1]), -np.inf, np.float32),
                                      np.maximum.accumulate(top[1:], axis=0)])

    @classmethod
    def try_build(cls, model, cfg: TrainConfig | None = None) -> FastPredictor | None:
        """The fast predictor, or None when the model's structure has no shared prefix."""
        plan = inference_plan(model, cfg.maxlen if cfg else None)
        return None if plan is None else cls(plan)

    def _features(self, codes: np.ndarray, first: int) -> np.ndarray:
        """Inputs of the first recurrent layer at steps [first, steps), time-major: without
        conv the codes (T, n) (projected per step through the table), with conv the
        pooled features (T, n, F)."""
        plan = self.plan
        if plan.conv is None:
            return np.ascontiguousarray(codes[:, first:].T)
        p, k = plan.pool_size, self.taps.shape[0]
        if first >= plan.steps:  # every row is all shared prefix
            return np.zeros((0, len(codes), self.taps.shape[2]), np.float32)
        q0, q1 = first * p - plan.pad_left, plan.steps * p + plan.pad_right
        pos = np.arange(q0, q1)
        zero_row = self.taps.shape[1] - 1
        inside = (pos >= 0) & (pos < self.maxlen)
        cols = np.where(inside, codes[:, np.clip(pos, 0, self.maxlen - 1)], zero_row)
        n_conv = (plan.steps - first) * p
        y = sum(self.taps[j][cols[:, j: j + n_conv]] for j in range(k)) + self.conv_bias
        y = np.asarray(self.conv_act(y), np.float32)
        y = y.reshape(len(codes), plan.steps - first, p, -1).max(axis=2)
        return np.ascontiguousarray(y.transpose(1, 0, 2))

    def _xw(self, li: int, src: np.ndarray, t: int, out: np.ndarray) -> None:
        """Layer li's input projection at step t into ``out`` (its first rows)."""
        layer, a = self.layers[li], len(out)
        if src.ndim == 2:  # codes: one table row per code
            np.take(layer.table, src[t, :a], axis=0, out=out)
        else:
            np.matmul(src[t, :a], layer.kernel, out=out)
            out += layer.bias

    def _run(self, src: np.ndarray, starts: np.ndarray, first: int, init: list[tuple],
             record: bool = False) -> tuple[np.ndarray, list[tuple]]:
        """Run rows sorted by ``starts`` (the step each begins at) ascending from their
        states ``init`` (per layer: h, c) to the last step. Returns the top layer's final
        h (n, units) and, with ``record``, per layer the states after each step from
        ``first`` on: (h, c) arrays (steps - first + 1, n, units). A max-pooled model
        returns the pooled top states instead of the final h (its prefix part from
        ``pad_max`` at each row's start)."""
        # active[t]: how many rows are already running at step first + t.
        active = np.searchsorted(starts, np.arange(first, self.steps), side="right")
        h, history = None, []
        for li in range(len(self.layers)):
            top_max = self.pad_max[starts] if self.plan.pool and li + 1 == len(self.layers) \
                else None
            h, src, hist = self._run_layer(li, src, active, init[li], record, top_max)
            if record:
                history.append(hist)
        return h, history

    def _run_layer(self, li: int, src: np.ndarray, active: np.ndarray, init: tuple,
                   record: bool, top_max: np.ndarray | None = None
                   ) -> tuple[np.ndarray, np.ndarray | None, tuple | None]:
        """One layer of _run: (its final h, or with ``top_max`` (each row's max over its
        prefix) the max over all its steps; its output sequence for the next layer (None
        for the top layer); with ``record`` its (h, c) history, else None)."""
        layer, n_steps = self.layers[li], len(active)
        h, c = (None if a is None else a.copy() for a in init)
        n, width = len(h), layer.rk.shape[1]
        xw, z, m = (np.empty((n, width), np.float32) for _ in range(3))
        # The next layer reads a row's outputs only from the row's own start on.
        seq = np.zeros((n_steps, n, layer.units), np.float32) \
            if li + 1 < len(self.layers) else None
        hist_h = hist_c = None
        if record:
            hist_h = np.empty((n_steps + 1, n, layer.units), np.float32)
            hist_c = np.empty_like(hist_h) if c is not None else None
            hist_h[0] = h
            if c is not None:
                hist_c[0] = c
        # All steps' input projections at once when they fit in PROJECT_ALL_BYTES.
        every = None
        if n_steps * n * width * 4 <= PROJECT_ALL_BYTES:
            every = layer.table[src] if src.ndim == 2 else src @ layer.kernel + layer.bias
        steppers: dict[int, tuple] = {}  # per number of running rows: views made once
        for t in range(n_steps):
            a = int(active[t])
            if a not in steppers:
                steppers[a] = (xw[:a], layer.stepper(h[:a], None if c is None else c[:a],
                                                     z[:a], m[:a]))
            xw_a, step = steppers[a]
            if every is None:
                self._xw(li, src, t, xw_a)
                step(xw_a)
            else:
                step(every[t, :a])
            if seq is not None:
                seq[t, :a] = h[:a]
            if top_max is not None:
                np.maximum(top_max[:a], h[:a], out=top_max[:a])
            if record:
                hist_h[t + 1] = h
                if c is not None:
                    hist_c[t + 1] = c
        return h if top_max is None else top_max, seq, (hist_h, hist_c) if record else None

    def _pad_init(self, shared: np.ndarray) -> list[tuple]:
        """Per layer, the padding states after ``shared`` steps, one row per entry."""
        return [(layer.pad_h[shared], layer.pad_c[shared] if layer.kind == "lstm" else None)
                for layer in self.layers]

    def _pad_states(self) -> None:
        """States after k = 0..steps padding steps, per layer, at batch size 1."""
        src = self._features(np.zeros((1, self.maxlen), np.int64), 0)
        for li, layer in enumerate(self.layers):
            width = layer.rk.shape[1]
            h = np.zeros((1, layer.units), np.float32)
            c = np.zeros((1, layer.units), np.float32) if layer.kind == "lstm" else None
            xw, z, m = (np.empty((1, width), np.float32) for _ in range(3))
            hs = np.zeros((self.steps + 1, layer.units), np.float32)
            cs = np.zeros_like(hs)
            step = layer.stepper(h, c, z, m)
            for t in range(self.steps):
                self._xw(li, src, t, xw)
                step(xw)
                hs[t + 1] = h[0]
                if c is not None:
                    cs[t + 1] = c[0]
            layer.pad_h, layer.pad_c = hs, cs
            src = hs[1:, None, :]

    def _steps_equal_to(self, x: np.ndarray, ref: np.ndarray) -> np.ndarray:
        """Per row, how many leading recurrent steps read exactly what ``ref``'s do."""
        differs = x != ref
        col = np.where(differs.any(axis=1), differs.argmax(axis=1), self.maxlen)
        same = np.maximum(col - self.plan.pad_right, 0) // self.plan.pool_size
        return np.where(col == self.maxlen, self.steps, np.minimum(same, self.steps))

    def predict_padded(self, x: np.ndarray) -> np.ndarray:
        """P(positive) for int rows (n, maxlen) padded 'pre', as model.predict gives.

        Each row starts from the padding state after its shared prefix. Rows that also
        begin like the first row (occlusion variants of one review differ from it at one
        word) start from the first row's state where they part: it is run first.
        """
        x = np.asarray(x)
        if x.ndim != 2 or x.shape[1] != self.maxlen:
            raise ValueError(f"expected rows of {self.maxlen} codes, got shape {x.shape}")
        if len(x) == 0:
            return np.zeros(0, np.float32)
        shared = self.steps - self.plan.steps_needed(x)  # padding prefix steps per row
        out = np.empty(len(x), np.float32)
        with _one_blas_thread(), np.errstate(over="ignore"):
            starts, init = self._starts(x, shared)
            order = np.argsort(starts, kind="stable")  # running rows are always a prefix
            first = int(starts[order[0]])
            h, _ = self._run(self._features(x[order], first), starts[order], first,
                             [(h0[order], None if c0 is None else c0[order])
                              for h0, c0 in init])
            logit = h @ self.head_w + self.head_b
            out[order] = 1.0 / (1.0 + np.exp(-logit))
        return out

    def _starts(self, x: np.ndarray, shared: np.ndarray) -> tuple[np.ndarray, list[tuple]]:
        """(the step each row starts at, per layer its (h, c) there): the end of its
        padding prefix, or, for rows (after the second) that begin like row 0 beyond the
        padding, where they part from row 0, from row 0's recorded states."""
        init = self._pad_init(shared)
        if len(x) <= 2 or self.plan.pool:  # a pooled row needs its own steps' max
            return shared, init
        same = self._steps_equal_to(x, x[0])
        reuse = same > shared  # begins like row 0 beyond the padding
        reuse[0] = False
        if not reuse.any():
            return shared, init
        first0 = int(shared[0])
        _, hist = self._run(self._features(x[:1], first0), shared[:1], first0,
                            self._pad_init(shared[:1]), record=True)
        init = [(np.where(reuse[:, None], _at(hh, same, first0), h0),
                 None if c0 is None else np.where(reuse[:, None], _at(hc, same, first0), c0))
                for (hh, hc), (h0, c0) in zip(hist, init)]
        return np.where(reuse, same, shared), init


def _at(history: np.ndarray, steps: np.ndarray, first: int) -> np.ndarray:
    """Row 0's recorded state after ``steps`` steps (history starts at step ``first``),
    clipped into range for the rows that do not use it."""
    return history[np.clip(steps - first, 0, len(history) - 1), 0]
