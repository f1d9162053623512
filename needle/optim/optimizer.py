"""Optimizers: SGD with momentum and Adam, both with L2 weight decay.

Updates work on the parameters' detached arrays, never on graph tensors: no graph is
built (the live tensor count stays flat over any number of steps), ``p.grad`` is never
modified, and each parameter's array is *replaced* by a new one of the same dtype.
Scalars are Python floats, so float32 parameters stay float32 and the arithmetic is
the course's, in the course's order (seeded runs give the course's numbers).
"""

from __future__ import annotations

import math
import numbers
import weakref
from typing import Any, Callable, Iterable

import numpy as np

from .._validation import check_real
from ..autograd import Tensor, release_gradient_graphs
from ..backends import BACKEND, array_api
from ..backends.denormals import flush_in_place, optimizer_must_flush

# The flat-buffer update makes every parameter a view into one buffer. A NumPy view is
# an ordinary array, but an NDArray view at an offset is not compact, so each op would
# copy it: under ``nd`` each parameter keeps its own compact array and state.
_FLAT_STATE = BACKEND == "np"


#: Checks that run on a parameter before every optimizer step, by the parameter's id (a
#: data-parallel model registers one that refuses gradients it has not averaged).
_STEP_CHECKS: dict[int, Callable[[Tensor], None]] = {}


def register_step_check(param: Tensor, check: Callable[[Tensor], None]) -> None:
    """Run ``check(param)`` at the start of every optimizer step that updates ``param``
    (it raises to refuse the step); replaces an earlier check, ends with the parameter."""
    _STEP_CHECKS[id(param)] = check
    weakref.finalize(param, _STEP_CHECKS.pop, id(param), None)


class Optimizer:
    """Base class: holds the parameter list, the learning rate and per-parameter state.

    ``params`` is a list (or any iterable) of Parameters, e.g. ``model.parameters()``.
    ``state[i]`` holds the NumPy arrays the optimizer keeps for ``params[i]``.
    Subclasses implement :meth:`_update` and list their hyper-parameters in
    ``_hyperparameters``.
    """

    _hyperparameters: tuple[str, ...] = ("lr",)

    def __init__(self, params: Iterable[Tensor], lr: float = 0.01) -> None:
        self.params = _check_params(type(self).__name__, params)
        self.lr = lr
        self.state: dict[int, dict[str, np.ndarray]] = {}
        self._flat: dict | None = None  # flat buffers behind ``state``, made at the first step

    @property
    def lr(self) -> float:
        """The learning rate (a float ≥ 0); learning-rate schedulers set it."""
        return self._lr

    @lr.setter
    def lr(self, value: float) -> None:
        self._lr = check_real(type(self).__name__, "lr", value, low=0.0)

    # ----- the update ----------------------------------------------------------------------
    def step(self) -> None:
        """Update every parameter that has a gradient; those whose ``grad`` is None are skipped.

        When every parameter has a gradient and all share one dtype (the usual case), the
        update runs once over all of them: gradients are gathered into one flat array and
        the formula is applied to flat state buffers (``state[i]`` are views into them),
        instead of a Python loop of small array ops per parameter. The arithmetic, and so
        every bit of the result, is the same either way. The step ends the recorded
        backward pass: its forward graph is no longer kept alive for the gradients
        (:func:`needle.autograd.release_gradient_graphs`).
        """
        release_gradient_graphs()
        params = self.params
        if _STEP_CHECKS:
            for param in params:
                check = _STEP_CHECKS.get(id(param))
                if check is not None:
                    check(param)
        if self._flat is None:
            self._allocate_state()
        if self._flat["slots"] is not None and all(p.grad is not None for p in params):
            self._step_flat()
            return
        indices = [i for i, param in enumerate(params) if param.grad is not None]
        datas = [params[i].realize_cached_data() for i in indices]
        # Cast the gradients (not in place) so a float64 loss cannot promote a parameter.
        grads = [params[i].grad.realize_cached_data().astype(data.dtype, copy=False)
                 for i, data in zip(indices, datas)]
        slots = [self.state[i] for i in indices]
        news = self._fused_step(datas, grads, slots)
        if news is None:
            news = [self._update(*args) for args in zip(slots, datas, grads)]
        for index, data, new in zip(indices, datas, news):
            _flush_if_needed(new, self.state[index].values())
            params[index].cached_data = new.astype(data.dtype, copy=False)

    # The device kernel that runs _update's formula over a list of parameters in one call
    # (``sgd_update``/``adam_update`` of the compiled backend), and its scalar arguments.
    _kernel: str | None = None

    def _kernel_scalars(self) -> tuple[float, ...]:
        return ()

    def _fused_step(self, datas: list, grads: list, slots: list) -> list | None:
        """The new parameter arrays from the device's one-pass kernel, all parameters in one
        call (the state ``slots`` updated in place); None where there is no such kernel.

        Only NDArray devices have them; they run the same float operations, in the same order,
        as the array formula in ``_update``, so the results are the same bits. One call for
        the whole list: a Python loop over the parameters cost ~20 µs each per step.
        """
        if BACKEND != "nd" or self._kernel is None or not datas:
            return None
        device = datas[0].device
        run = getattr(device, self._kernel, None)
        if run is None or any(data.device != device for data in datas):
            return None
        outs = [array_api.empty(data.shape, dtype=data.dtype, device=device) for data in datas]
        slot_lists = ([slot[name]._handle for slot in slots] for name in self._slot_names)
        run([data.compact()._handle for data in datas], [g.compact()._handle for g in grads],
            *slot_lists, [out._handle for out in outs], *self._kernel_scalars())
        return outs

    def _update(
        self, slots: dict[str, np.ndarray], data: np.ndarray, grad: np.ndarray
    ) -> np.ndarray:
        """The new parameter array given its array, its gradient and its state ``slots``.

        ``slots`` (this parameter's, or the flat buffers of all of them) are updated in
        place; ``data`` and ``grad`` are not modified.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement _update()")

    _slot_names: tuple[str, ...] = ()

    def _allocate_state(self) -> None:
        """Zero state for every parameter: one flat buffer per slot, ``state[i]`` views of it."""
        dtypes = {p.dtype for p in self.params}
        sizes = [p.size for p in self.params]
        offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
        self._flat = {"offsets": offsets, "slots": None, "data": None, "views": None}
        if len(dtypes) == 1 and _FLAT_STATE:
            dtype = dtypes.pop()
            flat = {name: np.zeros(offsets[-1], dtype=dtype) for name in self._slot_names}
            self._flat["slots"] = flat
            for i, p in enumerate(self.params):
                self.state[i] = {
                    name: buffer[offsets[i] : offsets[i + 1]].reshape(p.shape)
                    for name, buffer in flat.items()
                }
        else:
            for i, p in enumerate(self.params):
                self.state[i] = {
                    name: array_api.zeros_like(p.realize_cached_data())
                    for name in self._slot_names
                }

    def _step_flat(self) -> None:
        flat, params = self._flat, self.params
        offsets = flat["offsets"]
        dtype = params[0].dtype
        views = flat["views"]
        if views is not None and all(p.cached_data is v for p, v in zip(params, views)):
            data = flat["data"]  # the parameters are still the views made by the last step
        else:
            data = np.concatenate(
                [p.realize_cached_data().reshape(-1) for p in params], dtype=dtype
            )
        grad = np.concatenate(
            [p.grad.realize_cached_data().reshape(-1) for p in params], dtype=dtype
        )
        new = self._update(flat["slots"], data, grad)
        _flush_if_needed(new, flat["slots"].values())
        # Each parameter gets a view of the new array; the old arrays are left untouched.
        views = [new[offsets[i] : offsets[i + 1]].reshape(p.shape) for i, p in enumerate(params)]
        for param, view in zip(params, views):
            param.cached_data = view
        flat["data"], flat["views"] = new, views

    def reset_grad(self) -> None:
        """Set every parameter's ``grad`` to None (call before each ``backward()``)."""
        for param in self.params:
            param.grad = None

    def zero_grad(self) -> None:
        """PyTorch's name for :meth:`reset_grad`."""
        self.reset_grad()

    def clip_grad_norm(self, max_norm: float = 0.25) -> float:
        """:func:`clip_grad_norm` over this optimizer's parameters; returns the norm before."""
        caller = f"{type(self).__name__}.clip_grad_norm"
        return clip_grad_norm(self.params, max_norm, caller=caller)

    # ----- state --------------------------------------------------------------------------
    def _extra_state(self) -> dict:
        return {}

    def _load_extra_state(self, state: dict) -> None:
        pass

    def state_dict(self) -> dict:
        """Hyper-parameters and per-parameter state (NumPy copies), for saving.

        ``{"optimizer": class name, "num_params": n, "hyperparameters": {...},
        "state": {"0": {"u": array}, ...}, ...}``; the state is keyed by the
        parameter's index in ``params`` (as a string).
        """
        return {
            "optimizer": type(self).__name__,
            "num_params": len(self.params),
            "hyperparameters": {name: getattr(self, name) for name in self._hyperparameters},
            "state": {
                str(i): {k: np.array(v, copy=True) for k, v in slots.items()}
                for i, slots in sorted(self.state.items())
            },
            **self._extra_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned; training then continues bit-identically."""
        owner = f"{type(self).__name__}.load_state_dict"
        _check_state_header(owner, state, type(self).__name__, len(self.params))
        per_param = {}
        for key, slots in state["state"].items():
            index = _state_index(owner, key, len(self.params))
            per_param[index] = {
                name: _state_array(owner, key, name, value, self.params[index])
                for name, value in slots.items()
            }
        for name in self._hyperparameters:
            if name in state["hyperparameters"]:
                setattr(self, name, state["hyperparameters"][name])
        self._load_extra_state(state)
        self._allocate_state()
        for index, slots in per_param.items():
            for name, value in slots.items():
                if name not in self.state[index]:
                    raise ValueError(
                        f"{owner}: unknown state slot {name!r} for "
                        f"{type(self).__name__}; expected {list(self._slot_names)}"
                    )
                slot = self.state[index][name]
                slot[(slice(None),) * len(slot.shape)] = value  # in place: may view a flat buffer


def _flush_if_needed(new, slots: Iterable) -> None:
    """Flush subnormals in a new parameter array and its state, when needle.set_flush_denormal
    is on but the CPU's own flush-to-zero mode is not doing it (see backends.denormals)."""
    if optimizer_must_flush():
        for array in (new, *slots):
            flush_in_place(array)


def _squared_norm(array) -> float:
    """The sum of squares of ``array``'s elements, accumulated in float64."""
    wide = array.astype("float64")
    return float((wide * wide).sum().item())


def _check_params(owner: str, params: Iterable[Tensor]) -> list[Tensor]:
    if isinstance(params, Tensor):
        raise TypeError(
            f"{owner}: params must be a list of Parameters, got a single Tensor; "
            f"wrap it in a list: [param]"
        )
    params = list(params)
    if not params:
        raise ValueError(
            f"{owner}: got an empty parameter list; pass model.parameters() "
            f"of a model that has parameters"
        )
    seen = set()
    for index, param in enumerate(params):
        if not isinstance(param, Tensor):
            raise TypeError(
                f"{owner}: params[{index}] must be a Parameter (needle.Tensor), "
                f"got {type(param).__name__}"
            )
        if id(param) in seen:
            raise ValueError(
                f"{owner}: params[{index}] appears more than once in the "
                f"parameter list; each parameter would be updated twice"
            )
        seen.add(id(param))
    return params


def _check_state_header(owner: str, state: Any, kind: str, num_params: int) -> None:
    required = {"optimizer", "state", "hyperparameters"}
    if not isinstance(state, dict) or not required <= set(state):
        got = f"keys {sorted(state)}" if isinstance(state, dict) else type(state).__name__
        raise ValueError(
            f"{owner}: expected a dict from Optimizer.state_dict() with keys "
            f"{sorted(required)}, got {got}"
        )
    if state["optimizer"] != kind:
        raise ValueError(f"{owner}: the state was saved by {state['optimizer']!r}, not {kind!r}")
    if state.get("num_params", num_params) != num_params:
        raise ValueError(
            f"{owner}: the state is for {state['num_params']} parameters, but this "
            f"optimizer has {num_params}; build it on the same model"
        )


def _state_index(owner: str, key: Any, num_params: int) -> int:
    try:
        index = int(key)
    except (TypeError, ValueError):
        index = -1
    if not 0 <= index < num_params:
        raise ValueError(
            f"{owner}: state key {key!r} is not a parameter index in [0, {num_params})"
        )
    return index


def _state_array(owner: str, key: str, name: str, value: Any, param: Tensor) -> np.ndarray:
    array = np.array(value.numpy() if isinstance(value, Tensor) else value, copy=True)
    if array.shape != tuple(param.shape):
        raise ValueError(
            f"{owner}: state[{key!r}][{name!r}] has shape {array.shape}, but "
            f"params[{key}] has shape {tuple(param.shape)}"
        )
    if array.dtype != param.dtype:
        raise ValueError(
            f"{owner}: state[{key!r}][{name!r}] has dtype {array.dtype}, but "
            f"params[{key}] has dtype {param.dtype}"
        )
    return array


class SGD(Optimizer):
    """Stochastic gradient descent with momentum (an exponential average) and weight decay.

    Per parameter: ``g = grad + weight_decay * p``;
    ``u = momentum * u + (1 - momentum) * g`` (u starts at 0); ``p = p - lr * u``.
    (PyTorch's equivalent is ``SGD(momentum=m, dampening=m)`` with a zero initial buffer.)

    >>> import needle as ndl
    >>> w = ndl.nn.Parameter(ndl.Tensor([1.0], dtype="float32"))
    >>> (w * w).sum().backward()
    >>> SGD([w], lr=0.1).step()
    >>> w.numpy().tolist()
    [0.800000011920929]
    """

    _hyperparameters = ("lr", "momentum", "weight_decay")

    def __init__(
        self,
        params: Iterable[Tensor],
        lr: float = 0.01,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(params, lr)
        self.momentum = check_real("SGD", "momentum", momentum, low=0.0, high=1.0, high_open=True)
        self.weight_decay = check_real("SGD", "weight_decay", weight_decay, low=0.0)

    _slot_names = ("u",)
    _kernel = "sgd_update"

    def _kernel_scalars(self) -> tuple[float, ...]:
        return self.lr, self.momentum, self.weight_decay

    def _update(
        self, slots: dict[str, np.ndarray], data: np.ndarray, grad: np.ndarray
    ) -> np.ndarray:
        # The course's u = m*u + (1-m)*(grad + wd*p); p - lr*u, in place where the array is ours.
        g = array_api.multiply(data, self.weight_decay)
        g += grad
        u = slots["u"]
        u *= self.momentum
        g *= 1 - self.momentum
        u += g
        array_api.multiply(u, self.lr, out=g)
        return data - g


class Adam(Optimizer):
    """Adam with bias correction and (L2, not decoupled) weight decay.

    ``t`` increases once per :meth:`step`. Per parameter: ``g = grad + weight_decay * p``;
    ``m = beta1 * m + (1 - beta1) * g``; ``v = beta2 * v + (1 - beta2) * g**2``;
    ``m_hat = m / (1 - beta1**t)``; ``v_hat = v / (1 - beta2**t)``;
    ``p = p - lr * m_hat / (sqrt(v_hat) + eps)``.
    """

    _hyperparameters = ("lr", "beta1", "beta2", "eps", "weight_decay")

    def __init__(
        self,
        params: Iterable[Tensor],
        lr: float = 0.01,
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(params, lr)
        self.beta1 = check_real("Adam", "beta1", beta1, low=0.0, high=1.0, high_open=True)
        self.beta2 = check_real("Adam", "beta2", beta2, low=0.0, high=1.0, high_open=True)
        self.eps = check_real("Adam", "eps", eps, low=0.0, low_open=True)
        self.weight_decay = check_real("Adam", "weight_decay", weight_decay, low=0.0)
        self.t = 0

    def step(self) -> None:
        """One Adam step: ``t += 1``, then update every parameter that has a gradient."""
        self.t += 1
        super().step()

    _slot_names = ("m", "v")
    _kernel = "adam_update"

    def _kernel_scalars(self) -> tuple[float, ...]:
        return (self.lr, self.beta1, self.beta2, self.eps, self.weight_decay,
                1 - self.beta1**self.t, 1 - self.beta2**self.t)

    def _update(
        self, slots: dict[str, np.ndarray], data: np.ndarray, grad: np.ndarray
    ) -> np.ndarray:
        # The course's formula, operation for operation (so the bits match), but in place on
        # two scratch arrays: fresh temporaries of this size cost page faults on every step.
        g = array_api.multiply(data, self.weight_decay)
        g += grad  # g = grad + wd * p
        m, v = slots["m"], slots["v"]
        scratch = array_api.multiply(g, 1 - self.beta1)
        m *= self.beta1
        m += scratch  # m = b1 m + (1 - b1) g
        array_api.multiply(g, g, out=g)
        g *= 1 - self.beta2
        v *= self.beta2
        v += g  # v = b2 v + (1 - b2) g^2
        m_hat = array_api.divide(m, 1 - self.beta1**self.t, out=scratch)
        v_hat = array_api.divide(v, 1 - self.beta2**self.t, out=g)
        array_api.sqrt(v_hat, out=v_hat)
        v_hat += self.eps
        m_hat *= self.lr
        m_hat /= v_hat  # lr * m_hat / (sqrt(v_hat) + eps)
        return data - m_hat

    def _extra_state(self) -> dict:
        return {"t": self.t}

    def _load_extra_state(self, state: dict) -> None:
        t = state.get("t", 0)
        if isinstance(t, bool) or not isinstance(t, numbers.Integral) or t < 0:
            raise ValueError(f"Adam.load_state_dict: step count t must be an int >= 0, got {t!r}")
        self.t = int(t)


def clip_grad_norm(parameters: Iterable[Tensor], max_norm: float = 0.25, *,
                   caller: str = "clip_grad_norm") -> float:
    """Scale all gradients so their global L2 norm is at most ``max_norm``.

    The norm is taken over every gradient together, as if concatenated (parameters
    without a gradient are skipped). If it exceeds ``max_norm`` each gradient is
    multiplied by ``max_norm / (norm + 1e-6)`` (the small constant keeps the clipped
    norm just under ``max_norm``, as PyTorch's ``clip_grad_norm_`` does); each clipped
    gradient is a new tensor (the old one is not modified).

    Args:
        parameters: the tensors whose ``grad`` to clip (e.g. ``model.parameters()``).
        max_norm: the largest global norm allowed, > 0.
        caller: the name used in error messages.

    Returns:
        the global norm before clipping.

    Example:
        >>> import needle as ndl
        >>> w = ndl.Tensor([3.0, 4.0]); (w * w).sum().backward()  # grad (6, 8), norm 10
        >>> clip_grad_norm([w], 5.0), w.grad.numpy().round(4).tolist()
        (10.0, [3.0, 4.0])
    """
    max_norm = check_real(caller, "max_norm", max_norm, low=0.0, low_open=True)
    with_grad = [p for p in parameters if p.grad is not None]
    total = math.sqrt(sum(_squared_norm(p.grad.realize_cached_data()) for p in with_grad))
    scale = max_norm / (total + 1e-6)
    if scale < 1.0:
        for param in with_grad:
            grad = param.grad.realize_cached_data()
            param.grad = Tensor.make_const((grad * scale).astype(grad.dtype, copy=False))
    return total
