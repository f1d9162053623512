"""The NumPy backend module: the course's flat-buffer kernel API written with NumPy.

It serves two purposes: ``cpu_numpy()`` runs on machines where the compiled module
could not be built, and it is the oracle the compiled kernels are tested against.
Every function has the compiled module's signature: handles are flat :class:`Array`
buffers, shapes/strides/offsets are in elements, results go into ``out``.

Like the compiled bindings, the functions that walk strides check that every element
they reach lies inside the buffer, and the rest check handle sizes and dtypes, so a
bad direct call raises ``ValueError``/``TypeError`` instead of reading stray memory.

The fused kernels (norms, softmax loss, LSTM gates, row gather/scatter, optimizer updates)
view their buffers as arrays and run the NumPy backend's formulas
(:mod:`needle.backends.numpy.kernels`), so one formula serves both.
"""

from __future__ import annotations

import numpy as np

from ..numpy import kernels as formulas

__device_name__ = "numpy"

_DTYPES = {
    "float32": np.float32,
    "float64": np.float64,
    "int32": np.int32,
    "int64": np.int64,
    "bool": np.bool_,
}
_FLOATS = ("float32", "float64")


class Array:
    """A flat buffer of ``size`` elements of ``dtype`` (uninitialised, like the C++ one).

    >>> a = Array(3)
    >>> a.size, a.dtype
    (3, 'float32')
    """

    __slots__ = ("array",)
    array: np.ndarray

    def __init__(self, size: int, dtype: str = "float32") -> None:
        if dtype not in _DTYPES:
            raise TypeError(
                f"Array: dtype {dtype!r} is not supported; use float32, float64, int32, int64 "
                f"or bool"
            )
        if int(size) < 0:
            raise ValueError(f"Array: size must be >= 0, got {size}")
        self.array = np.empty(int(size), dtype=_DTYPES[dtype])

    @property
    def size(self) -> int:
        """Number of elements."""
        return self.array.size

    @property
    def dtype(self) -> str:
        """``"float32"``, ``"float64"``, ``"int32"``, ``"int64"`` or ``"bool"``."""
        return self.array.dtype.name

    def ptr(self) -> int:
        """The buffer's base address."""
        return self.array.ctypes.data


def _check_same_dtype(*handles: Array) -> None:
    dtypes = {h.array.dtype.name for h in handles}
    if len(dtypes) > 1:
        raise TypeError(f"all buffers of one call must share a dtype, got {sorted(dtypes)}")


def _check_float(name: str, handle: Array) -> None:
    """The compiled module's rule: kernels that compute in floating point refuse other dtypes."""
    if handle.array.dtype.name not in _FLOATS:
        raise TypeError(
            f"{name}: dtype {handle.array.dtype.name} is not supported; this kernel computes in "
            f"float32 or float64 (convert with astype('float32'))"
        )


def _check_sizes(name: str, *pairs: tuple[Array, int]) -> None:
    for handle, needed in pairs:
        if handle.array.size != needed:
            raise ValueError(f"{name}: a buffer has {handle.array.size} elements, needs {needed}")


def _write(outs: tuple, values: tuple) -> None:
    """Each of ``values`` (arrays of any shape, or 0-d) flattened into its ``outs`` buffer."""
    for out, value in zip(outs, values):
        out.array[:] = np.asarray(value).reshape(-1)


def _strided(handle: Array, shape, strides, offset: int, name: str = "view") -> np.ndarray:
    """A NumPy view of the elements ``handle[offset + Σ idx·strides]`` (range-checked);
    errors start with ``name``."""
    shape, strides, offset = tuple(shape), tuple(strides), int(offset)
    if len(shape) != len(strides) or any(s < 0 for s in shape):
        raise ValueError(f"{name}: bad layout: shape {shape}, strides {strides}")
    if not all(shape):  # an empty view reaches no element, whatever its offset
        return np.empty(shape, dtype=handle.array.dtype)
    size = handle.array.size
    low = offset + sum((n - 1) * s for n, s in zip(shape, strides) if s < 0)
    high = offset + sum((n - 1) * s for n, s in zip(shape, strides) if s > 0)
    if low < 0 or high >= size:
        raise ValueError(
            f"{name}: layout shape {shape}, strides {strides}, offset {offset} reaches elements "
            f"{low}..{high} of a buffer of {size}"
        )
    item = handle.array.itemsize
    base = handle.array[offset:]
    return np.lib.stride_tricks.as_strided(
        base, shape, tuple(s * item for s in strides), writeable=True
    )


def to_numpy(a: Array, shape, strides, offset: int) -> np.ndarray:
    """A new array of ``shape`` whose element idx is ``a[offset + Σ idx·strides]``."""
    return _strided(a, shape, strides, offset).copy()


def from_numpy(x: np.ndarray, out: Array) -> None:
    """Copy ``out.size`` values from a C-contiguous array of ``out``'s dtype."""
    if x.dtype != out.array.dtype:
        raise TypeError(f"from_numpy: the array's dtype {x.dtype} differs from out's {out.dtype}")
    if not x.flags.c_contiguous or x.size < out.array.size:
        raise ValueError(
            f"from_numpy: needs a C-contiguous {out.dtype} array of >= {out.size} elements, "
            f"got {x.dtype} of {x.size}"
        )
    out.array[:] = x.reshape(-1)[: out.array.size]


def fill(out: Array, val) -> None:
    """Set every element of ``out`` to ``val``."""
    out.array.fill(val)


def compact(a: Array, out: Array, shape, strides, offset: int) -> None:
    """Gather the strided elements of ``a`` into ``out`` in row-major order."""
    _check_same_dtype(a, out)
    view = _strided(a, shape, strides, offset)
    _check_sizes("compact", (out, view.size))
    out.array.reshape(view.shape)[...] = view


def ewise_setitem(a: Array, out: Array, shape, strides, offset: int) -> None:
    """Scatter compact ``a`` into the strided elements of ``out``."""
    _check_same_dtype(a, out)
    view = _strided(out, shape, strides, offset)
    _check_sizes("ewise_setitem", (a, view.size))
    view[...] = a.array.reshape(view.shape)


def ewise_add_setitem(a: Array, out: Array, shape, strides, offset: int) -> None:
    """Project extra: add compact ``a`` into the strided elements of ``out`` (no repeats)."""
    _check_same_dtype(a, out)
    view = _strided(out, shape, strides, offset, "ewise_add_setitem")
    _check_sizes("ewise_add_setitem", (a, view.size))
    view += a.array.reshape(view.shape)


def scalar_setitem(size: int, val, out: Array, shape, strides, offset: int) -> None:
    """Write ``val`` into the strided elements of ``out``."""
    view = _strided(out, shape, strides, offset)
    if view.size != size:
        raise ValueError(f"scalar_setitem: size {size} does not match shape {tuple(shape)}")
    view[...] = val


def _binary(ufunc, floats_only: bool = False):
    def kernel(a: Array, b: Array, out: Array) -> None:
        _check_same_dtype(a, b, out)
        if floats_only:
            _check_float(ufunc.__name__, out)
        _check_sizes(ufunc.__name__, (a, out.array.size), (b, out.array.size))
        with np.errstate(all="ignore"):
            ufunc(a.array, b.array, out=out.array, casting="unsafe")

    kernel.__doc__ = f"``out = {ufunc.__name__}(a, b)`` elementwise (1/0 for comparisons)."
    return kernel


def _scalar(ufunc, floats_only: bool = False):
    def kernel(a: Array, val, out: Array) -> None:
        _check_same_dtype(a, out)
        if floats_only:
            _check_float(ufunc.__name__, out)
        _check_sizes(ufunc.__name__, (a, out.array.size))
        with np.errstate(all="ignore"):
            ufunc(a.array, a.array.dtype.type(val), out=out.array, casting="unsafe")

    kernel.__doc__ = f"``out = {ufunc.__name__}(a, val)`` with ``val`` cast to a's dtype."
    return kernel


def _unary(ufunc):
    def kernel(a: Array, out: Array) -> None:
        _check_same_dtype(a, out)
        _check_float(ufunc.__name__, out)
        _check_sizes(ufunc.__name__, (a, out.array.size))
        with np.errstate(all="ignore"):
            ufunc(a.array, out=out.array)

    kernel.__doc__ = f"``out = {ufunc.__name__}(a)`` elementwise."
    return kernel


ewise_add, scalar_add = _binary(np.add), _scalar(np.add)
ewise_mul, scalar_mul = _binary(np.multiply), _scalar(np.multiply)
ewise_div, scalar_div = _binary(np.divide, True), _scalar(np.divide, True)
ewise_power, scalar_power = _binary(np.power, True), _scalar(np.power, True)
ewise_maximum, scalar_maximum = _binary(np.maximum), _scalar(np.maximum)
ewise_eq, scalar_eq = _binary(np.equal), _scalar(np.equal)
ewise_ge, scalar_ge = _binary(np.greater_equal), _scalar(np.greater_equal)
ewise_log, ewise_exp, ewise_tanh = _unary(np.log), _unary(np.exp), _unary(np.tanh)


def matmul(a: Array, b: Array, out: Array, m: int, n: int, p: int) -> None:
    """Row-major ``(m, n) @ (n, p)`` into ``(m, p)``; overwrites ``out``."""
    _check_same_dtype(a, b, out)
    _check_float("matmul", out)
    if min(m, n, p) < 0:
        raise ValueError(f"matmul: negative size in m={m}, n={n}, p={p}")
    _check_sizes("matmul", (a, m * n), (b, n * p), (out, m * p))
    np.matmul(a.array.reshape(m, n), b.array.reshape(n, p), out=out.array.reshape(m, p))


def matmul_strided(
    a: Array,
    b: Array,
    out: Array,
    m: int,
    n: int,
    p: int,
    a_strides,
    a_offset: int,
    b_strides,
    b_offset: int,
) -> None:
    """Project extra: ``out = A @ B`` for the strided (m, n) view A of ``a`` and (n, p) view
    B of ``b`` (element strides and offsets, range-checked) into compact (m, p) ``out``."""
    _check_same_dtype(a, b, out)
    _check_float("matmul_strided", out)
    if min(m, n, p) < 0:
        raise ValueError(f"matmul_strided: negative size in m={m}, n={n}, p={p}")
    _check_sizes("matmul_strided", (out, m * p))
    a_view = _strided(a, (m, n), a_strides, a_offset, "matmul_strided")
    b_view = _strided(b, (n, p), b_strides, b_offset, "matmul_strided")
    np.matmul(a_view, b_view, out=out.array.reshape(m, p))


def matmul_batched(a: Array, b: Array, out: Array, batch: int, m: int, n: int, p: int) -> None:
    """Project extra: ``out[k] = a[k] @ b[k]`` for compact (batch, m, n) and (batch, n, p)."""
    _check_same_dtype(a, b, out)
    _check_float("matmul_batched", out)
    if min(batch, m, n, p) < 0:
        raise ValueError(f"matmul_batched: negative size in batch={batch}, m={m}, n={n}, p={p}")
    _check_sizes("matmul_batched", (a, batch * m * n), (b, batch * n * p), (out, batch * m * p))
    np.matmul(
        a.array.reshape(batch, m, n),
        b.array.reshape(batch, n, p),
        out=out.array.reshape(batch, m, p),
    )


def _reduce(ufunc, name: str):
    def kernel(a: Array, out: Array, reduce_size: int) -> None:
        _check_same_dtype(a, out)
        if reduce_size < 0 or (reduce_size == 0 and ufunc is np.maximum and out.size):
            raise ValueError(f"{name}: bad reduce_size {reduce_size}")
        _check_sizes(name, (a, out.array.size * reduce_size))
        if out.array.size:  # an empty sum is 0: np.add.reduce gives that too
            ufunc.reduce(a.array.reshape(out.array.size, reduce_size), axis=1, out=out.array)

    kernel.__doc__ = f"``out[i] = {name[7:]}(a[i*rs:(i+1)*rs])``."
    return kernel


reduce_sum = _reduce(np.add, "reduce_sum")
reduce_max = _reduce(np.maximum, "reduce_max")


# ----- fused optimizer updates (project extras, mirrored by the compiled module) -------------


def _check_update(name: str, outs: list, *lists: list) -> None:
    """The compiled kernels' checks: one buffer per parameter in every list, each parameter's
    buffers of one dtype and size; all checked before anything is updated."""
    for buffers in lists:
        if len(buffers) != len(outs):
            raise ValueError(
                f"{name}: the buffer lists differ in length ({len(buffers)} and "
                f"{len(outs)}); one entry per parameter"
            )
    for i, out in enumerate(outs):
        handles = [out, *(buffers[i] for buffers in lists)]
        if any(h is None for h in handles):
            raise ValueError(f"{name}: got None in a buffer list")
        _check_same_dtype(*handles)
        _check_sizes(name, *((h, out.array.size) for h in handles))


def sgd_update(
    params: list, grads: list, u: list, outs: list, lr: float, momentum: float, weight_decay: float
) -> None:
    """needle's SGD step for a list of parameters: each ``u`` in place, the new parameters
    in ``outs`` (every argument but the scalars a list, one buffer per parameter)."""
    _list_update(
        "sgd_update", formulas.sgd_update, outs, (params, grads, u), (lr, momentum, weight_decay)
    )


def _list_update(name: str, formula, outs: list, lists: tuple, scalars: tuple) -> None:
    """An optimizer step over lists of buffers through ``formula``, after the checks; the new
    parameters written into ``outs``."""
    _check_update(name, outs, *lists)
    news = formula(*([b.array for b in buffers] for buffers in lists), *scalars)
    for out, new in zip(outs, news):
        out.array[:] = new


def adam_update(
    params: list,
    grads: list,
    m: list,
    v: list,
    outs: list,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    bias1: float,
    bias2: float,
) -> None:
    """needle's Adam step for a list of parameters: each ``m``, ``v`` in place, the new
    parameters in ``outs`` (lists as in :func:`sgd_update`).

    ``bias1 = 1 - beta1**t`` and ``bias2 = 1 - beta2**t`` are the bias corrections.
    """
    scalars = (lr, beta1, beta2, eps, weight_decay, bias1, bias2)
    _list_update("adam_update", formulas.adam_update, outs, (params, grads, m, v), scalars)


# ----- fused batch norm (project extras, mirrored by the compiled module) --------------------


def batchnorm_forward(
    x: Array,
    weight: Array,
    bias: Array,
    out: Array,
    xhat: Array,
    mean: Array,
    var: Array,
    inv_std: Array,
    n: int,
    d: int,
    eps: float,
) -> None:
    """Training batch norm of x (n, d) per column into ``out``; also writes ``xhat`` (n, d)
    and the column ``mean``, biased ``var`` and ``inv_std`` (d each)."""
    _check_same_dtype(x, weight, bias, out, xhat, mean, var, inv_std)
    _check_sizes(
        "batchnorm_forward",
        (x, n * d),
        (out, n * d),
        (xhat, n * d),
        (weight, d),
        (bias, d),
        (mean, d),
        (var, d),
        (inv_std, d),
    )
    if n < 1:
        raise ValueError(f"batchnorm_forward: needs at least one row, got n={n}")
    results = formulas.batchnorm_forward(x.array.reshape(n, d), weight.array, bias.array, eps)
    _write((out, xhat, mean, var, inv_std), results)


def batchnorm_backward(
    g: Array,
    xhat: Array,
    weight: Array,
    inv_std: Array,
    grad_x: Array,
    grad_weight: Array,
    grad_bias: Array,
    n: int,
    d: int,
) -> None:
    """The input, weight and bias gradients of :func:`batchnorm_forward` for out_grad g."""
    _norm_backward(
        "batchnorm_backward",
        formulas.batchnorm_backward,
        d,
        g,
        xhat,
        weight,
        inv_std,
        grad_x,
        grad_weight,
        grad_bias,
        n,
        d,
    )


def _norm_backward(
    name: str,
    formula,
    stats: int,
    g: Array,
    xhat: Array,
    weight: Array,
    inv_std: Array,
    grad_x: Array,
    grad_weight: Array,
    grad_bias: Array,
    n: int,
    d: int,
) -> None:
    """A norm's gradients through ``formula``, after the checks: ``stats`` is the size of
    ``inv_std`` (d for batch norm's columns, n for layer norm's rows)."""
    _check_same_dtype(g, xhat, weight, inv_std, grad_x, grad_weight, grad_bias)
    _check_sizes(
        name,
        (g, n * d),
        (xhat, n * d),
        (grad_x, n * d),
        (weight, d),
        (inv_std, stats),
        (grad_weight, d),
        (grad_bias, d),
    )
    results = formula(g.array.reshape(n, d), xhat.array.reshape(n, d), weight.array, inv_std.array)
    _write((grad_x, grad_weight, grad_bias), results)


# ----- fused dropout mask, layer norm, softmax loss and row gather/scatter (project extras) ---


def _check_ids(name: str, ids: np.ndarray, num_rows: int) -> np.ndarray:
    ids = np.ascontiguousarray(ids, dtype=np.int64).reshape(-1)
    bad = np.flatnonzero((ids < 0) | (ids >= num_rows))
    if bad.size:
        k = int(bad[0])
        raise ValueError(
            f"{name}: ids[{k}] = {ids[k]} is out of range for {num_rows} rows; "
            f"expected 0 <= id < {num_rows}"
        )
    return ids


def dropout(u: np.ndarray, x: Array, mask: Array, out: Array, keep: float) -> None:
    """Dropout from float64 NumPy draws: ``mask = [u <= keep] / keep`` in float32 (``u`` and
    ``keep`` rounded to it first, as a float32 ``rand`` makes them), cast to mask's dtype, and
    ``out = x * mask``."""
    if not isinstance(u, np.ndarray) or u.dtype != np.float64 or not u.flags.c_contiguous:
        raise TypeError(
            "dropout: u must be a C-contiguous float64 NumPy array (the draws of np.random.rand)"
        )
    _check_same_dtype(x, mask, out)
    _check_sizes("dropout", (mask, out.array.size), (x, out.array.size))
    if u.size != out.array.size:
        raise ValueError(f"dropout: u has {u.size} draws for {out.array.size} elements")
    if not 0 < keep <= 1:
        raise ValueError(f"dropout: keep must be in (0, 1], got {keep}")
    keep32 = np.float32(keep)
    kept = (u.reshape(-1).astype(np.float32) <= keep32).astype(np.float32)
    mask.array[...] = kept / keep32
    np.multiply(x.array, mask.array, out=out.array)


def relu_backward(g: Array, a: Array, out: Array) -> None:
    """ReLU's gradient: ``out = g * [a > 0]``."""
    _check_same_dtype(g, a, out)
    _check_sizes("relu_backward", (g, out.array.size), (a, out.array.size))
    out.array[:] = formulas.relu_backward(g.array, a.array)


def layernorm_forward(
    x: Array,
    weight: Array,
    bias: Array,
    out: Array,
    xhat: Array,
    inv_std: Array,
    n: int,
    d: int,
    eps: float,
) -> None:
    """Layer norm of the rows of x (n, d) into ``out``; also writes ``xhat`` and ``inv_std``
    (n,)."""
    _check_same_dtype(x, weight, bias, out, xhat, inv_std)
    if d < 1:
        raise ValueError(f"layernorm_forward: needs at least one column, got d={d}")
    _check_sizes(
        "layernorm_forward",
        (x, n * d),
        (out, n * d),
        (xhat, n * d),
        (weight, d),
        (bias, d),
        (inv_std, n),
    )
    results = formulas.layernorm_forward(x.array.reshape(n, d), weight.array, bias.array, eps)
    _write((out, xhat, inv_std), results)


def layernorm_backward(
    g: Array,
    xhat: Array,
    weight: Array,
    inv_std: Array,
    grad_x: Array,
    grad_weight: Array,
    grad_bias: Array,
    n: int,
    d: int,
) -> None:
    """The input, weight and bias gradients of :func:`layernorm_forward` for out_grad g."""
    _norm_backward(
        "layernorm_backward",
        formulas.layernorm_backward,
        n,
        g,
        xhat,
        weight,
        inv_std,
        grad_x,
        grad_weight,
        grad_bias,
        n,
        d,
    )


def softmax_cross_entropy(
    logits: Array, labels: np.ndarray, grad: Array, loss: Array, n: int, k: int
) -> None:
    """Mean softmax cross-entropy of logits (n, k) against int labels (n,) into ``loss`` (1,),
    and its gradient ``grad = (softmax - one_hot) * (1 / n)`` (n, k)."""
    _check_same_dtype(logits, grad, loss)
    if n < 1 or k < 1:
        raise ValueError(f"softmax_cross_entropy: needs n >= 1 and k >= 1, got n={n}, k={k}")
    _check_sizes("softmax_cross_entropy", (logits, n * k), (grad, n * k), (loss, 1))
    labels = _check_ids("softmax_cross_entropy", labels, k)
    if labels.size != n:
        raise ValueError(f"softmax_cross_entropy: got {labels.size} labels for {n} rows")
    _write((loss, grad), formulas.softmax_cross_entropy(logits.array.reshape(n, k), labels))


def take_rows(table: Array, ids: np.ndarray, out: Array, num_rows: int, d: int) -> None:
    """``out[k] = table[ids[k]]`` for a (num_rows, d) table; ids outside it raise ValueError."""
    _check_same_dtype(table, out)
    ids = _check_ids("take_rows", ids, num_rows)
    _check_sizes("take_rows", (table, num_rows * d), (out, ids.size * d))
    out.array[:] = formulas.take_rows(table.array.reshape(num_rows, d), ids).reshape(-1)


def add_rows(rows: Array, ids: np.ndarray, out: Array, num_rows: int, d: int) -> None:
    """``out = zeros (num_rows, d)``; ``out[ids[k]] += rows[k]`` in order (repeats accumulate)."""
    _check_same_dtype(rows, out)
    ids = _check_ids("add_rows", ids, num_rows)
    _check_sizes("add_rows", (rows, ids.size * d), (out, num_rows * d))
    out.array[:] = formulas.add_rows(rows.array.reshape(ids.size, d), ids, num_rows).reshape(-1)


# ----- fused LSTM cell gates (project extras, mirrored by the compiled module) ----------------


def _check_lstm(name: str, wide: tuple, narrow: tuple, batch: int, hidden: int) -> None:
    _check_same_dtype(*wide, *narrow)
    _check_sizes(
        name, *((a, batch * 4 * hidden) for a in wide), *((a, batch * hidden) for a in narrow)
    )


def lstm_cell_forward(
    pre: Array,
    c: Array,
    act: Array,
    h_out: Array,
    c_out: Array,
    tanh_c: Array,
    batch: int,
    hidden: int,
) -> None:
    """One LSTM step's gates: from ``pre`` (batch, 4·hidden) in blocks i, f, g, o and ``c``,
    write ``act`` = (σ(i), σ(f), tanh(g), σ(o)), ``c' = f·c + i·g``, ``tanh(c')`` and
    ``h' = o·tanh(c')``."""
    _check_lstm("lstm_cell_forward", (pre, act), (c, h_out, c_out, tanh_c), batch, hidden)
    results = formulas.lstm_cell_forward(
        pre.array.reshape(batch, 4 * hidden), c.array.reshape(batch, hidden)
    )
    _write((h_out, c_out, act, tanh_c), results)


def lstm_cell_backward(
    grad_h: Array,
    grad_c: Array,
    c: Array,
    act: Array,
    tanh_c: Array,
    grad_pre: Array,
    grad_c_prev: Array,
    batch: int,
    hidden: int,
) -> None:
    """The gradients of :func:`lstm_cell_forward`: ``grad_pre`` (batch, 4·hidden) and that of
    the previous cell state, from the gradients of h' and c'."""
    _check_lstm(
        "lstm_cell_backward",
        (act, grad_pre),
        (grad_h, grad_c, c, tanh_c, grad_c_prev),
        batch,
        hidden,
    )
    state = (batch, hidden)  # the shape of h, c and their gradients
    results = formulas.lstm_cell_backward(
        grad_h.array.reshape(state),
        grad_c.array.reshape(state),
        c.array.reshape(state),
        act.array.reshape(batch, 4 * hidden),
        tanh_c.array.reshape(state),
    )
    _write((grad_pre, grad_c_prev), results)


# ----- sums over rows and row broadcasts (project extras, mirrored by the compiled module) ----


def reduce_sum_rows(a: Array, out: Array, rows: int, cols: int) -> None:
    """``out[j] = Σ_i a[i, j]`` for a compact (rows, cols) ``a``."""
    _check_same_dtype(a, out)
    _check_sizes("reduce_sum_rows", (a, rows * cols), (out, cols))
    np.add.reduce(a.array.reshape(rows, cols), axis=0, out=out.array)


def add_row(a: Array, row: Array, out: Array, rows: int, cols: int) -> None:
    """``out[i, j] = a[i, j] + row[j]`` for a compact (rows, cols) ``a``."""
    _check_same_dtype(a, row, out)
    _check_sizes("add_row", (a, rows * cols), (row, cols), (out, rows * cols))
    out.array[:] = formulas.add_row(a.array.reshape(rows, cols), row.array).reshape(-1)
