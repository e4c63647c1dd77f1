"""The public API is a snapshot: a change to an exported name or to the signature of an
entry point shows up here and must be made on purpose.

Regenerate after an intended change: ``python -m tests.test_public_api --update``.
"""

import importlib
import inspect
import json
import pathlib
import sys

import disttrace as dt

SNAPSHOT = pathlib.Path(__file__).with_name("public_api.json")
PACKAGES = ("", "algorithms", "allocator", "checkpoint", "compiler", "distributed", "lora", "nn", "ops", "streaming", "tasks", "train", "units")


def _default(value) -> str:
    # Initializer objects print their RNG state; only their type is part of the API.
    if value is None or isinstance(value, bool | int | float | str | tuple):
        return repr(value)
    if isinstance(value, type):
        return value.__name__
    return f"<{type(value).__name__}>"


def _signature(obj) -> str:
    target = obj.__init__ if inspect.isclass(obj) else obj
    try:
        sig = inspect.signature(target)
    except (TypeError, ValueError):
        return "<no signature>"
    params = [
        p.replace(default=inspect.Parameter.empty, annotation=inspect.Parameter.empty)
        for p in sig.parameters.values()
    ]
    text = []
    for p, original in zip(params, sig.parameters.values()):
        item = str(p)
        if original.default is not inspect.Parameter.empty:
            item += "=" + _default(original.default)
        text.append(item)
    return "(" + ", ".join(text) + ")"


def current() -> dict:
    api = {}
    for name in PACKAGES:
        module = importlib.import_module(f"disttrace.{name}") if name else dt
        for export in sorted(module.__all__):
            obj = getattr(module, export)
            kind = "module" if inspect.ismodule(obj) else ("callable" if callable(obj) else "value")
            key = f"{'disttrace.' + name if name else 'disttrace'}.{export}"
            api[key] = _signature(obj) if kind == "callable" else kind
    # methods users call on a learner
    for cls in (dt.algorithms.OnlineLearner, dt.algorithms.BPTTLearner):
        for meth in ("etrace_grad", "etrace_grad_compiled", "etrace_grad_memory", "tune_chunk_size", "init", "step", "params", "predict", "reset_state"):
            api[f"{cls.__name__}.{meth}"] = _signature(getattr(cls, meth))
    return api


def test_public_api_matches_snapshot():
    want = json.loads(SNAPSHOT.read_text())
    got = current()
    missing, added = sorted(set(want) - set(got)), sorted(set(got) - set(want))
    changed = sorted(k for k in set(want) & set(got) if want[k] != got[k])
    assert not (missing or added or changed), (
        f"public API changed; missing {missing}, added {added}, changed {changed}. "
        "If intended: python -m tests.test_public_api --update"
    )


if __name__ == "__main__" and "--update" in sys.argv:
    SNAPSHOT.write_text(json.dumps(current(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {SNAPSHOT} ({len(current())} entries)")
