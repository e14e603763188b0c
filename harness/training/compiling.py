"""``torch.compile`` for the models of one run: every entry point with a cache of its own, the
batch dimension dynamic, and a record of what was compiled and of every call that ran eager.

Why not ``nn.Module.compile()``: dynamo keeps its compiled graphs on the *code object* it
compiles and allows ``recompile_limit`` (8) of them per code object. Every harness network
inherits ``forward`` from :class:`harness.models.base.Classifier`, so student and teacher,
train and eval BatchNorm, grad, no-grad and inference mode, inputs with and without gradients
and the short last batch of every run in the process shared one budget of 8 graphs. Once it was
spent, every later call (the next run of a grid, another architecture) ran eager, silently.

Here, for each model of a run:

- each entry point (``forward``, and ``forward_features`` / ``forward_head``, which feature
  methods such as GACD call directly) is replaced, on the instance, by a trampoline whose code
  object is a fresh copy: its own cache, its own budget of graphs. A call made while another
  entry point is being traced goes straight to the original method, so ``forward`` is one graph
  that inlines the two halves;
- the batch dimension of the inputs is marked dynamic before the first call, so the short last
  batch and the selection batches reuse the graphs of the training batches' shape instead of
  compiling their own;
- the trampoline counts the calls it runs eagerly: it runs eagerly only when dynamo did not
  compile it (the recompile limit, an error it suppressed), never when a compiled graph runs;
- a foreign model's hook-based ``forward_features`` (:func:`harness.models.with_feature_api`)
  runs its forward eagerly, by design: dynamo does not see a hook added after it compiled a
  graph (``skip_nnmodule_hook_guards``), so the hook would never fire. Those calls are counted
  apart (``hooked_calls``).

:class:`RunCompiler` starts each run with dynamo's state reset and reads torch's own counters
(``torch._dynamo.utils.counters``) at the end: graphs compiled, frames that failed to compile,
recompile-limit hits, graph breaks. Together with the eager calls they make the run's
:class:`CompileRecord`, which the run keeps in its provenance.
"""

from __future__ import annotations

import types
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

#: The backend ``compile`` uses; tests that count graphs may swap in a cheaper one.
BACKEND = "inductor"
#: Graphs allowed per entry point (dynamo's default is 8). An entry point legitimately needs one
#: per combination of BatchNorm mode, grad/no-grad/inference mode, autocast, inputs with or
#: without gradients and, on some backends, batches below 16 images: about 6 for a student.
RECOMPILE_LIMIT = 16
ENTRY_POINTS = ("forward", "forward_features", "forward_head")
#: How dynamo names the limit in what it counts (older torch: the "cache size limit").
LIMIT_MESSAGES = ("recompile limit", "recompile_limit", "cache size limit", "cache_size_limit")


@dataclass
class CompileRecord:
    """What ``torch.compile`` did during one run (kept in the run's provenance)."""

    backend: str
    graphs: int  # graphs dynamo compiled (counters["stats"]["unique_graphs"])
    entry_graphs: dict[str, int] = field(default_factory=dict)  # cache entries per entry point
    recompile_limit: int = 0
    recompile_limit_hits: int = 0  # frames refused for hitting the limit (they then run eager)
    failed_frames: int = 0  # frames dynamo gave up on (counters["frames"] total - ok)
    graph_breaks: int = 0
    eager_calls: int = 0  # calls of a compiled entry point that ran eagerly
    hooked_calls: int = 0  # hook-based feature calls of foreign models, eager by design

    @property
    def fell_back(self) -> bool:
        """Whether any call ran eager or any frame failed to compile."""
        return bool(self.recompile_limit_hits or self.failed_frames or self.eager_calls)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "fell_back": self.fell_back}

    def summary(self) -> str:
        """One line for the run's log."""
        text = f"torch.compile ({self.backend}): {self.graphs} graph(s)"
        if self.fell_back:
            text += (
                f"; FELL BACK TO EAGER: {self.eager_calls} eager call(s), "
                f"{self.recompile_limit_hits} recompile-limit hit(s), "
                f"{self.failed_frames} failed frame(s)"
            )
        if self.graph_breaks:
            text += f"; {self.graph_breaks} graph break(s)"
        return text


def _counters() -> dict[str, Counter]:
    from torch._dynamo.utils import counters

    return {k: Counter(v) for k, v in counters.items()}


def _own_code(fn: Callable[..., Any]) -> types.FunctionType:
    """A copy of ``fn`` with a code object of its own (dynamo caches per code object)."""
    assert isinstance(fn, types.FunctionType)
    return types.FunctionType(
        fn.__code__.replace(), fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__
    )


def _trampoline(target: Callable[..., Any], eager: Counter, key: str) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        if not torch.compiler.is_compiling():  # dead code in a compiled graph
            eager[key] += 1
        return target(*args, **kwargs)

    return _own_code(call)


def _mark_batch_dynamic(args: tuple[Any, ...]) -> None:
    for arg in args:
        if isinstance(arg, torch.Tensor) and arg.dim() > 0:
            torch._dynamo.maybe_mark_dynamic(arg, 0)


def _class_method(model: nn.Module, name: str) -> Callable[..., Any] | None:
    """``model``'s method ``name`` as its class defines it (None for an instance attribute,
    such as the hook-based ``forward_features`` given to foreign models, and for the
    ``forward`` a module without one inherits)."""
    if name in vars(model):
        return None
    fn = getattr(type(model), name, None)
    if fn is getattr(nn.Module, name, None):  # a container that is never called (GACD's heads)
        return None
    return fn if isinstance(fn, types.FunctionType) else None


class RunCompiler:
    """Compiles the models of one run; :meth:`record` says what happened since it was made.

    Creating one resets dynamo (every compiled graph of an earlier run in this process is
    dropped; they belonged to models that are gone) and sets ``suppress_errors``, so a graph
    that fails to compile runs eager instead of stopping a week-long grid; the record says so.
    """

    def __init__(self, backend: str | None = None) -> None:
        import torch._dynamo
        from torch._dynamo import config

        torch._dynamo.reset()
        config.suppress_errors = True
        name = _limit_name()
        setattr(config, name, max(getattr(config, name), RECOMPILE_LIMIT))
        self.backend = backend or BACKEND
        self._start = _counters()
        self._codes: dict[str, types.CodeType] = {}
        self._eager: Counter = Counter()
        self._hooked_calls: Counter = Counter()

    def compile(self, model: nn.Module, role: str = "model") -> nn.Module:
        """Compile ``model``'s entry points in place (its state dict keeps its keys)."""
        for name in ENTRY_POINTS:
            method = _class_method(model, name)
            if method is None:
                continue
            key = f"{role}.{name}"
            target = types.MethodType(method, model)
            call = _trampoline(target, self._eager, key)
            compiled = torch.compile(call, backend=self.backend)
            self._codes[key] = call.__code__
            object.__setattr__(model, name, _entry(target, compiled))
            if name == "forward" and "forward_features" in vars(model):
                hooked = vars(model)["forward_features"]
                object.__setattr__(
                    model, "forward_features", self._hooked(model, hooked, target, role)
                )
        return model

    def _hooked(
        self,
        model: nn.Module,
        features: Callable[..., Any],
        eager_forward: Callable[..., Any],
        role: str,
    ) -> Callable[..., Any]:
        """``features`` (which reads what a forward hook saw) with the eager ``forward``."""

        def call(*args: Any, **kwargs: Any) -> Any:
            compiled_forward = model.forward
            object.__setattr__(model, "forward", eager_forward)
            try:
                self._hooked_calls[f"{role}.forward_features"] += 1
                return features(*args, **kwargs)
            finally:
                object.__setattr__(model, "forward", compiled_forward)

        return call

    def record(self) -> CompileRecord:
        from torch._dynamo import config

        now = _counters()

        def delta(group: str) -> Counter:
            return now.get(group, Counter()) - self._start.get(group, Counter())

        frames = delta("frames")
        limit_hits = sum(
            n
            for msg, n in delta("unimplemented").items()
            if any(m in msg.lower() for m in LIMIT_MESSAGES)
        )
        return CompileRecord(
            backend=self.backend,
            graphs=delta("stats")["unique_graphs"],
            entry_graphs={key: _cache_entries(code) for key, code in self._codes.items()},
            recompile_limit=int(getattr(config, _limit_name())),
            recompile_limit_hits=limit_hits,
            failed_frames=frames["total"] - frames["ok"],
            graph_breaks=sum(delta("graph_break").values()),
            eager_calls=sum(self._eager.values()),
            hooked_calls=sum(self._hooked_calls.values()),
        )


def _limit_name() -> str:
    from torch._dynamo import config

    return "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"


def _entry(target: Callable[..., Any], compiled: Callable[..., Any]) -> Callable[..., Any]:
    def entry(*args: Any, **kwargs: Any) -> Any:
        if torch.compiler.is_compiling():  # called from another entry point's graph: inline
            return target(*args, **kwargs)
        _mark_batch_dynamic(args)
        return compiled(*args, **kwargs)

    return entry


def _cache_entries(code: types.CodeType) -> int:
    """How many compiled graphs dynamo holds for ``code`` (-1 if this torch cannot say)."""
    try:
        from torch._dynamo.eval_frame import _debug_get_cache_entry_list

        return len(_debug_get_cache_entry_list(code))
    except (ImportError, TypeError, AttributeError):  # a private API of dynamo
        return -1
