"""Where a compiled step spends its time: a JAX profiler trace summarised per XLA operation.

Each executed HLO operation (a fusion, a convolution, a copy...) appears in the trace as an
event named after the instruction in the optimised HLO module. Joining the two gives, per
operation, the time it took and what it came from: the JAX op (`metadata op_name`, where
`transpose(jvp(...))` marks the backward pass) and the ops fused into it. This is what the
speed work in docs/performance.md was read from; no TensorBoard is needed.
"""

from __future__ import annotations

import collections
import glob
import os
import re
from collections.abc import Callable
from typing import Any

import jax

_INSTR = re.compile(r"^\s*(?:ROOT\s+)?%([\w.-]+) = (.*)$")
_COMP = re.compile(r"^(?:ENTRY\s+)?%([\w.-]+) .*\{$")
_OPCODE = re.compile(r"\}?\s([a-z][\w-]*)\(")
_OP_NAME = re.compile(r'op_name="([^"]*)"')
_CALLS = re.compile(r"calls=%([\w.-]+)")
_SHAPE = re.compile(r"^(\(?[a-z0-9]+\[[^\]]*\])")


def parse_hlo(text: str) -> dict[str, dict[str, Any]]:
    """Instruction name -> {opcode, shape, op_name, fused opcodes} from an HLO module's text."""
    comps: dict[str, list[tuple[str, str]]] = collections.defaultdict(list)
    current = None
    for line in text.splitlines():
        comp = _COMP.match(line)
        if comp:
            current = comp.group(1)
            continue
        instr = _INSTR.match(line)
        if instr and current is not None:
            comps[current].append((instr.group(1), instr.group(2)))
    info = {}
    for instrs in comps.values():
        for name, rest in instrs:
            opcode = _OPCODE.search(rest)
            op_name = _OP_NAME.search(rest)
            calls = _CALLS.search(rest)
            shape = _SHAPE.match(rest)
            fused, inner_name = [], None
            if calls and calls.group(1) in comps:
                for _, inner in comps[calls.group(1)]:
                    inner_op = _OPCODE.search(inner)
                    if inner_op and inner_op.group(1) not in ("parameter", "constant", "bitcast", "broadcast"):
                        fused.append(inner_op.group(1))
                    found = _OP_NAME.search(inner)
                    if inner_name is None and found and "/" in found.group(1):
                        inner_name = found.group(1)
            info[name] = {
                "opcode": opcode.group(1) if opcode else "?",
                "shape": shape.group(1) if shape else "",
                "op_name": (op_name.group(1) if op_name else None) or inner_name or "",
                "fused": sorted(set(fused)),
            }
    return info


def _kind(name: str, meta: dict[str, Any]) -> str:
    """A coarse label: which family of work an operation belongs to."""
    ops = set(meta.get("fused", ())) | {meta.get("opcode", "")}
    if "convolution" in ops or "dot" in ops or "custom-call" in ops:
        return "conv/matmul"
    if "select-and-scatter" in ops:
        return "max-pool backward"
    if "reduce-window" in ops:
        return "max-pool forward"
    if "reduce" in ops:
        return "reductions (BatchNorm, loss, grad norm)"
    if ops <= {"copy", "transpose", "fusion"} and ("copy" in ops or "transpose" in ops):
        return "copies/transposes (layout, aliasing)"
    if "slice" in ops or "pad" in ops:
        return "pad/slice elementwise (shifted depthwise, concat)"
    return "other elementwise"


def summarize_trace(trace_dir: str, hlo_text: str, steps: int, top: int = 25) -> dict[str, Any]:
    """Per-operation and per-kind time from the newest trace under `trace_dir`.

    Times are summed over XLA's worker threads (thread-time, not wall time): operations that
    run side by side both count in full. Shares are of the total operation time.
    """
    paths = sorted(glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True), key=os.path.getmtime)
    if not paths:
        raise FileNotFoundError(f"No *.xplane.pb trace under {trace_dir}: did the profiler run?")
    data = jax.profiler.ProfileData.from_file(paths[-1])
    hlo = parse_hlo(hlo_text)
    per_op: collections.Counter = collections.Counter()
    calls: collections.Counter = collections.Counter()
    for plane in data.planes:
        for line in plane.lines:
            if not line.name.startswith("tf_XLA"):
                continue
            for event in line.events:
                if event.name in hlo:
                    per_op[event.name] += event.duration_ns
                    calls[event.name] += 1
    total = sum(per_op.values())
    if not total:
        raise ValueError(f"The trace in {trace_dir} has no XLA operation events (is this an XLA:CPU trace?).")
    kinds: collections.Counter = collections.Counter()
    for name, ns in per_op.items():
        kinds[_kind(name, hlo[name])] += ns
    rows = []
    for name, ns in per_op.most_common(top):
        meta = hlo[name]
        rows.append({
            "op": name,
            "ms_per_step": round(ns / 1e6 / steps, 3),
            "share": round(ns / total, 4),
            "calls_per_step": calls[name] / steps,
            "pass": "backward" if "transpose(" in meta["op_name"] else ("forward" if meta["op_name"] else "?"),
            "jax_op": meta["op_name"].rsplit("/", 1)[-1],
            "shape": meta["shape"],
            "fused": meta["fused"][:8],
            "kind": _kind(name, meta),
        })
    return {
        "op_thread_ms_per_step": round(total / 1e6 / steps, 2),
        "by_kind": {k: {"ms_per_step": round(v / 1e6 / steps, 2), "share": round(v / total, 4)} for k, v in kinds.most_common()},
        "top_ops": rows,
    }


def trace_steps(run_once: Callable[[Any], Any], carry: Any, steps: int, trace_dir: str) -> Any:
    """Runs `carry = run_once(carry)` `steps` times under the JAX profiler; returns the carry."""
    os.makedirs(trace_dir, exist_ok=True)
    with jax.profiler.trace(trace_dir):
        for _ in range(steps):
            carry = run_once(carry)
    return carry


def format_summary(summary: dict[str, Any], title: str) -> str:
    """The per-kind and top-operation tables as Markdown."""
    lines = [f"{title}: {summary['op_thread_ms_per_step']:.0f} ms of operation thread-time per step", "",
             "| kind | ms/step | share |", "|---|---|---|"]
    lines += [f"| {k} | {v['ms_per_step']:.1f} | {100 * v['share']:.1f}% |" for k, v in summary["by_kind"].items()]
    lines += ["", "| op | ms/step | share | pass | jax op | shape | fused |", "|---|---|---|---|---|---|---|"]
    lines += [
        f"| {r['op']} | {r['ms_per_step']:.1f} | {100 * r['share']:.1f}% | {r['pass']} | {r['jax_op']} | {r['shape']} | {' '.join(r['fused'])} |"
        for r in summary["top_ops"]
    ]
    return "\n".join(lines)
