"""Regenerate the golden frames in golden.json:  .venv/bin/python tests/data/protocol/make_golden.py

Every input is fixed (key seed, nonce, timestamps) and Ed25519 signatures are deterministic, so
the frames are a pure function of the encoder.  If this script changes golden.json, the wire
format changed: that needs a version bump under the rules in protocol/codec.py, not a quiet
regeneration.  The tests import `sample_messages` from here so samples have one definition.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from protocol import (  # noqa: E402
    Announce,
    AnnounceItem,
    Completion,
    Identity,
    Message,
    PeerCard,
    Request,
    Response,
    RolloutGroup,
    SamplingParams,
    TaskRef,
    encode,
    logprob_array,
    sign_group,
    token_array,
)
from protocol.outcome import prompt_key_digest  # noqa: E402

# RFC 8032 section 7.1, TEST 1 secret key: anyone can re-derive the public key and peer id.
SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
SWARM = "golden-swarm"
TIMESTAMP_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
CREATED_MS = TIMESTAMP_MS - 1_000
NONCE = bytes(range(16))
GOLDEN_PATH = Path(__file__).with_name("golden.json")


def identity() -> Identity:
    return Identity.from_seed(SEED)


def procedural_group(ident: Identity) -> RolloutGroup:
    """Two completions with token ids, behaviour logprobs and two reward components."""
    completions = (
        Completion(text="2 + 2 = 4", token_ids=token_array([17, 945, 17, 426, 19]),
                   behavior_logprobs=logprob_array([-0.5, -0.25, -1.0, -0.125, -2.0]),
                   claimed_rewards={"correct": 1.0, "format": 0.5}),
        Completion(text="5", token_ids=token_array([20]), behavior_logprobs=logprob_array([-3.0]),
                   claimed_rewards={"correct": 0.0, "format": 0.0}),
    )  # fmt: skip
    group = RolloutGroup(
        swarm_id=SWARM,
        task=TaskRef(dataset="basic_arithmetic", seed=42, index=7),
        ground_truth="4",
        completions=completions,
        model_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        tokenizer_hash="9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        policy_version=12,
        sampling=SamplingParams(temperature=0.7, top_p=0.95, max_tokens=64),
    )
    return sign_group(group, ident, created_ms=CREATED_MS)


def question_group(ident: Identity) -> RolloutGroup:
    """Text only: a literal question with a verifier spec, no tokens, no claimed rewards."""
    group = RolloutGroup(
        swarm_id=SWARM,
        task=TaskRef(question="What is the capital of France?", verifier="exact"),
        ground_truth=None,
        completions=(Completion(text="Paris"), Completion(text="Lyon")),
        model_id="tiny",
        tokenizer_hash="",
        policy_version=0,
        sampling=SamplingParams(temperature=1.0, top_p=1.0, max_tokens=8),
    )
    return sign_group(group, ident, created_ms=CREATED_MS)


def sample_messages() -> dict[str, Message]:
    ident = identity()
    group = procedural_group(ident)
    return {
        "rollout_group": group,
        "rollout_group_text_only": question_group(ident),
        "peer_card": PeerCard(
            peer_id=ident.peer_id, addresses=("/ip4/127.0.0.1/tcp/4001",), model_id="tiny",
            tokenizer_hash="", policy_version=3, hardware_class="cpu", software_version="0.1.0",
            protocol_version=(1, 0), tasks=("basic_arithmetic", "chain_sum"),
        ),
        "announce": Announce(items=(
            AnnounceItem(group_id=group.group_id, task="basic_arithmetic", num_completions=2,
                         size_bytes=812, policy_version=12, difficulty=0.5,
                         prompt_key=prompt_key_digest("basic_arithmetic", "What is 2 + 2?"), successes=1),
            AnnounceItem(group_id=bytes(32), task="question", num_completions=4, size_bytes=100,
                         policy_version=0),
        )),
        "request": Request(request_id=bytes(range(100, 116)), group_ids=(group.group_id,)),
        "response": Response(request_id=bytes(range(100, 116)), groups=(group,), missing=(bytes(32),)),
    }  # fmt: skip


def golden_frames() -> dict[str, bytes]:
    ident = identity()
    return {name: encode(msg, ident, SWARM, timestamp_ms=TIMESTAMP_MS, nonce=NONCE)
            for name, msg in sample_messages().items()}  # fmt: skip


def main() -> None:
    ident = identity()
    doc = {
        "peer_id": ident.peer_id,
        "group_id": procedural_group(ident).group_id.hex(),
        "frames": {name: frame.hex() for name, frame in golden_frames().items()},
    }
    GOLDEN_PATH.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {GOLDEN_PATH} ({len(doc['frames'])} frames)")


if __name__ == "__main__":
    main()
