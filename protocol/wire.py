"""Messages <-> msgpack maps with short keys: the schema and bounds check of every payload.

Why maps with short keys rather than positional arrays: a receiver ignores keys it does not
know, which is what lets an older peer decode a newer minor version; field order stops
mattering to decoders; a hex dump reads like the spec.  The keys cost ~2 bytes a field, next to
kilobytes of text and packed token data.  Encoders emit keys in the order the dataclasses list
them and omit absent optional fields; that order is also the canonical form the group id hashes.

`from_wire` functions raise `ProtocolError(SCHEMA)` for a missing field or wrong msgpack type
and `ProtocolError(OUT_OF_BOUNDS)` for a value outside its documented range.  Cross-field
consistency (lengths agree, logprobs <= 0, ...) is the validators' job, not this module's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from protocol.errors import ProtocolError, RejectReason
from protocol.limits import Limits
from protocol.messages import (
    Announce,
    AnnounceItem,
    Completion,
    PeerCard,
    Request,
    Response,
    RolloutGroup,
    SamplingParams,
    TaskRef,
    array_to_le_bytes,
    logprobs_from_le_bytes,
    tokens_from_le_bytes,
)
from protocol.outcome import PROMPT_KEY_BYTES

Wire = dict[str, Any]  # a decoded msgpack map; values are checked before use
_I64_MAX = 2**63 - 1
_MISSING = object()


# ---------------------------------------------------------------- typed field readers


def _get(d: Mapping[str, Any], key: str, path: str, optional: bool) -> Any:
    value = d.get(key, _MISSING)
    if value is _MISSING or (optional and value is None):
        if optional:
            return None
        raise ProtocolError(RejectReason.SCHEMA, f"{path}.{key} missing")
    return value


def _map(value: Any, path: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise ProtocolError(RejectReason.SCHEMA, f"{path} must be a map")
    return value


def _str(d: Mapping[str, Any], key: str, path: str, max_bytes: int, min_bytes: int = 1) -> str:
    value = _get(d, key, path, optional=False)
    return _check_str(value, f"{path}.{key}", max_bytes, min_bytes)


def _opt_str(d: Mapping[str, Any], key: str, path: str, max_bytes: int, min_bytes: int = 1) -> str | None:
    value = _get(d, key, path, optional=True)
    return None if value is None else _check_str(value, f"{path}.{key}", max_bytes, min_bytes)


def _check_str(value: Any, where: str, max_bytes: int, min_bytes: int) -> str:
    if type(value) is not str:
        raise ProtocolError(RejectReason.SCHEMA, f"{where} must be a str")
    size = len(value) if value.isascii() else len(value.encode("utf-8"))
    if not min_bytes <= size <= max_bytes:
        raise ProtocolError(
            RejectReason.OUT_OF_BOUNDS, f"{where} is {size} bytes, not in [{min_bytes}, {max_bytes}]"
        )
    return value


def _check_int(value: Any, where: str, lo: int, hi: int) -> int:
    if type(value) is not int:  # bool is an int subclass: refused
        raise ProtocolError(RejectReason.SCHEMA, f"{where} must be an int")
    if not lo <= value <= hi:
        raise ProtocolError(RejectReason.OUT_OF_BOUNDS, f"{where}={value} not in [{lo}, {hi}]")
    return value


def _req_int(d: Mapping[str, Any], key: str, path: str, lo: int, hi: int) -> int:
    return _check_int(_get(d, key, path, optional=False), f"{path}.{key}", lo, hi)


def _opt_int(d: Mapping[str, Any], key: str, path: str, lo: int, hi: int) -> int | None:
    value = _get(d, key, path, optional=True)
    return None if value is None else _check_int(value, f"{path}.{key}", lo, hi)


def _float(value: Any, where: str) -> float:
    """msgpack float32/float64 or int, as a Python float (NaN and inf pass: bounds decide)."""
    if type(value) is float:
        return value
    if type(value) is int:
        try:
            return float(value)
        except OverflowError as exc:  # cannot happen for msgpack ints, kept for safety
            raise ProtocolError(RejectReason.OUT_OF_BOUNDS, f"{where} too large") from exc
    raise ProtocolError(RejectReason.SCHEMA, f"{where} must be a number")


def _bounded_float(
    d: Mapping[str, Any], key: str, path: str, lo: float, hi: float, lo_open: bool = False
) -> float:
    value = _float(_get(d, key, path, optional=False), f"{path}.{key}")
    if not (lo < value <= hi if lo_open else lo <= value <= hi):  # NaN fails both
        raise ProtocolError(RejectReason.OUT_OF_BOUNDS, f"{path}.{key}={value} out of range")
    return value


def _bin(value: Any, where: str, size: int) -> bytes:
    if type(value) is not bytes or len(value) != size:
        raise ProtocolError(RejectReason.SCHEMA, f"{where} must be {size} bytes of bin")
    return value


def _list(d: Mapping[str, Any], key: str, path: str, lo: int, hi: int, optional: bool = False) -> list[Any]:
    value = _get(d, key, path, optional)
    if value is None:
        return []
    if type(value) is not list:
        raise ProtocolError(RejectReason.SCHEMA, f"{path}.{key} must be an array")
    if not lo <= len(value) <= hi:
        raise ProtocolError(
            RejectReason.OUT_OF_BOUNDS, f"{path}.{key} has {len(value)} entries, not in [{lo}, {hi}]"
        )
    return value


def _put(out: Wire, key: str, value: Any) -> None:
    if value is not None:
        out[key] = value


# ---------------------------------------------------------------- RolloutGroup


def task_to_wire(task: TaskRef) -> Wire:
    out: Wire = {}
    _put(out, "ds", task.dataset)
    _put(out, "sd", task.seed)
    _put(out, "ix", task.index)
    _put(out, "q", task.question)
    _put(out, "vf", task.verifier)
    return out


def task_from_wire(value: Any, limits: Limits, path: str) -> TaskRef:
    d = _map(value, path)
    task = TaskRef(
        dataset=_opt_str(d, "ds", path, limits.max_name_bytes),
        seed=_opt_int(d, "sd", path, 0, _I64_MAX),
        index=_opt_int(d, "ix", path, 0, _I64_MAX),
        question=_opt_str(d, "q", path, limits.max_text_bytes),
        verifier=_opt_str(d, "vf", path, limits.max_name_bytes),
    )
    procedural = (task.dataset, task.seed, task.index)
    if any(v is None for v in procedural) and any(v is not None for v in procedural):
        raise ProtocolError(RejectReason.SCHEMA, f"{path}: ds, sd and ix go together")
    if task.dataset is None and (task.question is None or task.verifier is None):
        raise ProtocolError(RejectReason.SCHEMA, f"{path}: needs ds/sd/ix or q with vf")
    return task


def completion_to_wire(c: Completion) -> Wire:
    out: Wire = {"x": c.text}
    if c.token_ids is not None:
        out["tk"] = array_to_le_bytes(c.token_ids)
    if c.behavior_logprobs is not None:
        out["lp"] = array_to_le_bytes(c.behavior_logprobs)
    if c.claimed_rewards:
        out["r"] = {name: float(v) for name, v in c.claimed_rewards.items()}
    return out


def completion_from_wire(value: Any, limits: Limits, path: str) -> Completion:
    d = _map(value, path)
    max_packed = 4 * limits.max_tokens_per_completion
    packed: dict[str, bytes | None] = {}
    for key in ("tk", "lp"):
        raw = _get(d, key, path, optional=True)
        if raw is not None and (type(raw) is not bytes or len(raw) % 4):
            raise ProtocolError(RejectReason.SCHEMA, f"{path}.{key} must be bin of 4-byte values")
        if raw is not None and len(raw) > max_packed:
            raise ProtocolError(
                RejectReason.LENGTH_LIMIT, f"{path}.{key} holds more than {max_packed // 4} tokens"
            )
        packed[key] = raw
    rewards_raw = _get(d, "r", path, optional=True)
    rewards: dict[str, float] = {}
    if rewards_raw is not None:
        rmap = _map(rewards_raw, f"{path}.r")
        if len(rmap) > limits.max_reward_components:
            raise ProtocolError(RejectReason.OUT_OF_BOUNDS, f"{path}.r has {len(rmap)} components")
        for name, v in rmap.items():
            _check_str(name, f"{path}.r key", limits.max_name_bytes, 1)
            rewards[name] = _float(v, f"{path}.r.{name}")
    tk, lp = packed["tk"], packed["lp"]
    return Completion(
        text=_str(d, "x", path, limits.max_text_bytes, min_bytes=0),
        token_ids=None if tk is None else tokens_from_le_bytes(tk),
        behavior_logprobs=None if lp is None else logprobs_from_le_bytes(lp),
        claimed_rewards=rewards,
    )


def group_content_to_wire(g: RolloutGroup) -> Wire:
    """Every field but id and signature, in canonical order: what the group id hashes."""
    out: Wire = {"sw": g.swarm_id, "task": task_to_wire(g.task)}
    _put(out, "gt", g.ground_truth)
    out["c"] = [completion_to_wire(c) for c in g.completions]
    out["m"] = g.model_id
    out["tok"] = g.tokenizer_hash
    out["pv"] = g.policy_version
    out["sp"] = {
        "t": float(g.sampling.temperature),
        "p": float(g.sampling.top_p),
        "mt": g.sampling.max_tokens,
    }
    out["o"] = g.origin
    out["ct"] = g.created_ms
    return out


def group_to_wire(g: RolloutGroup) -> Wire:
    out = group_content_to_wire(g)
    out["id"] = g.group_id
    out["sig"] = g.origin_signature
    if g.truncated:
        out["tr"] = list(g.truncated)
    return out


def _truncated_flags(d: Mapping[str, Any], path: str, n: int) -> tuple[bool, ...]:
    raw = _get(d, "tr", path, optional=True)
    if raw is None:
        return ()
    if not isinstance(raw, list) or len(raw) != n or any(type(v) is not bool for v in raw):
        raise ProtocolError(RejectReason.SCHEMA, f"{path}.tr must be a list of {n} bools, one per completion")
    return tuple(raw)


def group_from_wire(value: Any, limits: Limits, path: str = "group") -> RolloutGroup:
    d = _map(value, path)
    sp = _map(_get(d, "sp", path, optional=False), f"{path}.sp")
    completions = _list(d, "c", path, 1, limits.max_completions)
    return RolloutGroup(
        swarm_id=_str(d, "sw", path, limits.max_name_bytes),
        task=task_from_wire(_get(d, "task", path, optional=False), limits, f"{path}.task"),
        ground_truth=_opt_str(d, "gt", path, limits.max_text_bytes, min_bytes=0),
        completions=tuple(
            completion_from_wire(c, limits, f"{path}.c[{i}]") for i, c in enumerate(completions)
        ),
        model_id=_str(d, "m", path, limits.max_name_bytes),
        tokenizer_hash=_str(d, "tok", path, limits.max_name_bytes, min_bytes=0),
        policy_version=_req_int(d, "pv", path, 0, _I64_MAX),  # plausibility is a validator's call
        sampling=SamplingParams(
            temperature=_bounded_float(sp, "t", f"{path}.sp", 0.0, 10.0),
            top_p=_bounded_float(sp, "p", f"{path}.sp", 0.0, 1.0, lo_open=True),
            max_tokens=_req_int(sp, "mt", f"{path}.sp", 1, limits.max_tokens_per_completion),
        ),
        origin=_str(d, "o", path, limits.max_name_bytes),
        created_ms=_req_int(d, "ct", path, 0, _I64_MAX),
        group_id=_bin(_get(d, "id", path, optional=False), f"{path}.id", 32),
        origin_signature=_bin(_get(d, "sig", path, optional=False), f"{path}.sig", 64),
        truncated=_truncated_flags(d, path, len(completions)),
    )


# ---------------------------------------------------------------- the other messages


def card_to_wire(c: PeerCard) -> Wire:
    return {
        "id": c.peer_id, "a": list(c.addresses), "m": c.model_id, "tok": c.tokenizer_hash,
        "pv": c.policy_version, "hw": c.hardware_class, "sv": c.software_version,
        "pr": list(c.protocol_version), "ts": list(c.tasks),
    }  # fmt: skip


def card_from_wire(value: Any, limits: Limits, path: str = "card") -> PeerCard:
    d = _map(value, path)
    name = limits.max_name_bytes
    pr = _list(d, "pr", path, 2, 2)
    return PeerCard(
        peer_id=_str(d, "id", path, name),
        addresses=tuple(_check_str(a, f"{path}.a[]", name, 1) for a in _list(d, "a", path, 0, limits.max_addresses)),
        model_id=_str(d, "m", path, name),
        tokenizer_hash=_str(d, "tok", path, name, min_bytes=0),
        policy_version=_req_int(d, "pv", path, 0, _I64_MAX),
        hardware_class=_str(d, "hw", path, name),
        software_version=_str(d, "sv", path, name),
        protocol_version=(_check_int(pr[0], f"{path}.pr[0]", 0, 65535), _check_int(pr[1], f"{path}.pr[1]", 0, 65535)),
        tasks=tuple(_check_str(t, f"{path}.ts[]", name, 1) for t in _list(d, "ts", path, 0, limits.max_tasks)),
    )  # fmt: skip


def announce_to_wire(a: Announce) -> Wire:
    items = []
    for it in a.items:
        item: Wire = {"id": it.group_id, "task": it.task, "n": it.num_completions, "sz": it.size_bytes,
                      "pv": it.policy_version}  # fmt: skip
        _put(item, "d", None if it.difficulty is None else float(it.difficulty))
        _put(item, "pk", it.prompt_key)
        _put(item, "ns", it.successes)
        items.append(item)
    return {"i": items}


def announce_from_wire(value: Any, limits: Limits, path: str = "announce") -> Announce:
    d = _map(value, path)
    items = []
    for k, raw in enumerate(_list(d, "i", path, 1, limits.max_announce_items)):
        p = f"{path}.i[{k}]"
        it = _map(raw, p)
        difficulty = None
        if _get(it, "d", p, optional=True) is not None:
            difficulty = _bounded_float(it, "d", p, 0.0, 1.0)
        prompt_key = _get(it, "pk", p, optional=True)
        if prompt_key is not None:
            prompt_key = _bin(prompt_key, f"{p}.pk", PROMPT_KEY_BYTES)
        items.append(AnnounceItem(
            group_id=_bin(_get(it, "id", p, optional=False), f"{p}.id", 32),
            task=_str(it, "task", p, limits.max_name_bytes),
            num_completions=_req_int(it, "n", p, 1, limits.max_completions),
            size_bytes=_req_int(it, "sz", p, 0, limits.max_frame_bytes),
            policy_version=_req_int(it, "pv", p, 0, _I64_MAX),
            difficulty=difficulty,
            prompt_key=prompt_key,
            successes=_opt_int(it, "ns", p, 0, limits.max_completions),  # <= n: a validator's call
        ))  # fmt: skip
    return Announce(items=tuple(items))


def request_to_wire(r: Request) -> Wire:
    return {"rid": r.request_id, "ids": list(r.group_ids)}


def request_from_wire(value: Any, limits: Limits, path: str = "request") -> Request:
    d = _map(value, path)
    ids = _list(d, "ids", path, 1, limits.max_request_ids)
    return Request(
        request_id=_bin(_get(d, "rid", path, optional=False), f"{path}.rid", 16),
        group_ids=tuple(_bin(g, f"{path}.ids[]", 32) for g in ids),
    )


def response_to_wire(r: Response) -> Wire:
    out: Wire = {"rid": r.request_id, "g": [group_to_wire(g) for g in r.groups]}
    if r.missing:
        out["mis"] = list(r.missing)
    return out


def response_from_wire(value: Any, limits: Limits, path: str = "response") -> Response:
    d = _map(value, path)
    groups = _list(d, "g", path, 0, limits.max_response_groups)
    missing = _list(d, "mis", path, 0, limits.max_request_ids, optional=True)
    return Response(
        request_id=_bin(_get(d, "rid", path, optional=False), f"{path}.rid", 16),
        groups=tuple(group_from_wire(g, limits, f"{path}.g[{i}]") for i, g in enumerate(groups)),
        missing=tuple(_bin(m, f"{path}.mis[]", 32) for m in missing),
    )
