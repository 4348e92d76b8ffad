"""Retrieval, the recent-item filter and the ranker as one in-process TensorFlow call.

The composed path (``ModelSet.candidate_rows`` → ``postrank.unseen_rows`` →
``ModelSet.rank``) crosses between Python and TensorFlow twice per request: it
converts the retrieval's rows back to NumPy, gathers 500 rows of item features and
embeddings in NumPy, packs them and converts them to tensors again. In-process,
``FusedRanking`` runs the same steps inside one ``tf.function`` over the loaded
signatures: the user's values go in as one flat vector per dtype (each input one
row, broadcast to the candidates in the graph; the recent rows ride with the int64
values), the item snapshot and the embedding table are tensors made once per
snapshot and per version, and only the kept rows and their scores come out.

Same answer as the composed path, bit for bit (tested): the same signatures on the
same values (``tf.gather`` and ``tf.cast`` give what NumPy indexing and ``astype``
give), the same order, the same filter. Backends without loaded functions (TF
Serving) keep the composed path.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import numpy as np

from feature_repo import features as f
from serving.backends import Signature, TensorSpec
from serving.features import ITEM_COLUMNS, ItemSnapshot
from serving.model_set import ITEM_EMBEDDING_INPUT, user_value


class FusedRanking:
    """``(rows, scores)`` of one user's candidates in one call.

    ``retrieval``: the retrieval's rows signature (a ``ConcreteFunction`` answering
    ``rows_output``); ``ranker``: the ranker's, scored by ``score_output``;
    ``embeddings``: the version's item table.
    """

    def __init__(
        self,
        retrieval: Any,
        retrieval_signature: Signature,
        rows_output: str,
        ranker: Any,
        ranker_signature: Signature,
        score_output: str,
        embeddings: np.ndarray,
    ) -> None:
        import tensorflow as tf

        from serving.backends.inprocess import TensorCall

        # The user's inputs of both models, one row each, flattened into one vector
        # per dtype; the recent rows follow the int64 values. Two eager tensors per
        # request (each costs tens of µs of Python), sliced back apart in the graph.
        user_specs: dict[tuple[str, str], TensorSpec] = {
            ("retrieval", n): s for n, s in retrieval_signature.inputs.items()
        }
        for name, spec in ranker_signature.inputs.items():
            if name != ITEM_EMBEDDING_INPUT and name not in f.ITEM_FEATURES:
                user_specs["ranker", name] = spec
        layout: dict[np.dtype, list[tuple[tuple[str, str], int, tuple[int, ...]]]] = {
            np.dtype(np.int64): []
        }
        sizes: dict[np.dtype, int] = {np.dtype(np.int64): 0}
        for key, spec in user_specs.items():
            inner = spec.shape[1:]
            if spec.dtype.kind not in "fiub" or None in inner:
                raise ValueError(f"{key} ({spec.dtype}, {spec.shape}) cannot be fused")
            offset = sizes.get(spec.dtype, 0)
            layout.setdefault(spec.dtype, []).append((key, offset, inner))  # type: ignore[arg-type]
            sizes[spec.dtype] = offset + int(np.prod(inner, dtype=np.int64))
        self._vectors = [
            (f"user_{dtype.name}", dtype, sizes[dtype], entries)
            for dtype, entries in layout.items()
        ]
        self._specs = user_specs
        ranker_inputs = ranker_signature.inputs
        columns = {name: i for i, name in enumerate(ITEM_COLUMNS)}
        n_ints = sizes[np.dtype(np.int64)]

        def ranked(inputs: dict[str, Any]) -> tuple[Any, Any]:
            user = {}
            for name, _, _, entries in self._vectors:
                flat = inputs[name]
                for key, offset, inner in entries:
                    size = int(np.prod(inner, dtype=np.int64))
                    user[key] = tf.reshape(flat[offset : offset + size], (1, *inner))
            answer = retrieval(**{n: user["retrieval", n] for n in retrieval_signature.inputs})
            rows = tf.cast(tf.reshape(answer[rows_output], [-1]), tf.int64)
            table, items = inputs["embeddings"], inputs["items"]
            known = (rows >= 0) & (rows < tf.cast(tf.shape(table)[0], tf.int64))
            recent = tf.equal(rows[:, None], inputs["user_int64"][n_ints:][None, :])
            rows = tf.boolean_mask(rows, known & ~tf.reduce_any(recent, axis=1))
            rows = rows[: inputs["limit"]]
            n = tf.shape(rows)[:1]
            features = {}
            for name, spec in ranker_inputs.items():
                dtype = tf.as_dtype(spec.dtype)
                if name == ITEM_EMBEDDING_INPUT:
                    features[name] = tf.cast(tf.gather(table, rows), dtype)
                elif name in f.ITEM_FEATURES:
                    features[name] = tf.cast(tf.gather(items[:, columns[name]], rows), dtype)
                else:
                    one = user["ranker", name]  # [1, ...]
                    features[name] = tf.broadcast_to(one, tf.concat([n, tf.shape(one)[1:]], 0))
            return rows, ranker(**features)[score_output]

        specs = {
            name: tf.TensorSpec((None,), tf.as_dtype(dtype), name=name)
            for name, dtype, _, _ in self._vectors
        }
        specs["limit"] = tf.TensorSpec((), tf.int64, name="limit")
        specs["items"] = tf.TensorSpec((None, len(ITEM_COLUMNS)), tf.float64, name="items")
        specs["embeddings"] = tf.TensorSpec(
            (None, embeddings.shape[1]), tf.float32, name="embeddings"
        )
        concrete = tf.function(ranked, autograph=False).get_concrete_function(specs)
        self._call = TensorCall(concrete)
        self._constant = tf.constant
        self._embeddings = tf.constant(embeddings.astype(np.float32, copy=False))
        self._items: tuple[ItemSnapshot | None, Any] = (None, None)
        self._limits: dict[int, Any] = {}
        self._lock = threading.Lock()

    def _items_tensor(self, snapshot: ItemSnapshot) -> Any:
        """The snapshot's values as a tensor, converted once per snapshot."""
        seen, tensor = self._items
        if seen is snapshot:
            return tensor
        with self._lock:
            if self._items[0] is not snapshot:
                self._items = (snapshot, self._constant(snapshot.values.astype(np.float64)))
            return self._items[1]

    def __call__(
        self, user: Mapping[str, Any], recent: np.ndarray, snapshot: ItemSnapshot, limit: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """(the first ``limit`` retrieved catalogue rows that are neither unknown nor
        ``recent``, in retrieval order; their ranker scores as float64)."""
        tensors = {}
        for name, dtype, size, entries in self._vectors:
            ints = dtype == np.int64
            flat = np.empty(size + len(recent) if ints else size, dtype=dtype)
            for key, offset, _ in entries:
                value = user_value(user, key[1], self._specs[key])
                flat[offset : offset + value.size] = value.reshape(-1)
            if ints:
                flat[size:] = recent
            tensors[name] = self._constant(flat)
        if limit not in self._limits:
            self._limits[limit] = self._constant(limit, dtype="int64")
        tensors["limit"] = self._limits[limit]
        tensors["items"] = self._items_tensor(snapshot)
        tensors["embeddings"] = self._embeddings
        rows, scores = self._call.call_tensors(tensors)
        return rows.numpy(), scores.numpy().astype(np.float64)
