"""The sealed party-to-party channel and the owners' pins, without workers."""

from __future__ import annotations

from pathlib import Path

import pytest

from kernel_bridge.errors import ConfigError, MessageRejected, UntrustedParty
from kernel_bridge.owner.config import WorkerConfig
from kernel_bridge.smpc import channel, keys


def _pair(tmp_path: Path) -> tuple[keys.Identity, keys.Identity]:
    return keys.load_or_create(tmp_path / "a", "alice"), keys.load_or_create(tmp_path / "b", "bob")


def _link(a: keys.Identity, b: keys.Identity) -> tuple[channel.Sender, channel.Receiver]:
    init = channel.Initiator(a, b.name)
    hello, reply, receiver = channel.respond(b, init.hello())
    assert hello.sender == a.name and hello.static == a.public
    return init.finish(reply, lambda name, static: None), receiver


def test_roundtrip_and_binding(tmp_path: Path) -> None:
    a, b = _pair(tmp_path)
    s, r = _link(a, b)
    frames = [s.seal("c_1", "open:0", b"x" * 100), s.seal("c_1", "open:1", b"")]
    m = r.open(frames[0])
    assert (m.cid, m.kind, m.seq, m.payload) == ("c_1", "open:0", 0, b"x" * 100)
    assert r.open(frames[1]).seq == 1
    assert channel.describe(frames[0])["from"] == "alice"  # what a relay would see
    assert b"x" * 16 not in frames[0]  # the payload is encrypted


@pytest.mark.parametrize("attack", ["flip_body", "flip_header", "replay", "reorder",
                                    "other_link", "misrouted", "truncated"])
def test_tampering_is_rejected(tmp_path: Path, attack: str) -> None:
    a, b = _pair(tmp_path)
    s, r = _link(a, b)
    f0, f1 = s.seal("c_1", "open:0", b"secret-masked"), s.seal("c_1", "open:1", b"more")
    why = {"flip_body": "forged", "flip_header": "forged", "replay": "replayed",
           "reorder": "replayed", "other_link": "forged", "misrouted": "misrouted",
           "truncated": "forged"}[attack]
    if attack == "flip_body":
        bad = bytearray(f0)
        bad[-1] ^= 1
        frame = bytes(bad)
    elif attack == "flip_header":  # another computation id, same length
        frame = f0.replace(b"c_1", b"c_2")
    elif attack == "replay":
        r.open(f0)
        frame = f0
    elif attack == "reorder":
        frame = f1
    elif attack == "other_link":  # a message of an earlier link between the same two workers
        s2, _ = _link(a, b)
        frame = s2.seal("c_1", "open:0", b"secret-masked")
    elif attack == "misrouted":
        c = keys.load_or_create(tmp_path / "c", "carol")
        s3, _ = _link(a, c)
        frame = s3.seal("c_1", "open:0", b"secret-masked")
    else:
        frame = f0[:-5]
    with pytest.raises(MessageRejected) as err:
        r.open(frame)
    assert err.value.data["why"] == why
    if attack not in ("replay",):
        assert r.open(f0).payload == b"secret-masked"  # the real one still opens


def test_initiator_checks_the_far_end(tmp_path: Path) -> None:
    a, b = _pair(tmp_path)
    trust = keys.TrustStore(tmp_path / "a")
    init = channel.Initiator(a, "bob")
    _, reply, _ = channel.respond(b, init.hello())

    def check(name: str, static: bytes) -> None:
        trust.check(name, static, "peer")

    with pytest.raises(UntrustedParty):
        init.finish(reply, check)
    keys.trust(tmp_path / "a", "bob", b.fingerprint, "peer")
    init = channel.Initiator(a, "bob")
    _, reply, _ = channel.respond(b, init.hello())
    init.finish(reply, check)
    assert trust.trusts("bob", b.public) == {"peer"}
    assert trust.trusts("bob", a.public) == set()  # a name with another key is not bob


def test_identity_is_kept_and_private(tmp_path: Path) -> None:
    a = keys.load_or_create(tmp_path, "alice")
    assert keys.load_or_create(tmp_path, "alice").fingerprint == a.fingerprint
    assert (tmp_path / keys.IDENTITY_FILE).stat().st_mode & 0o077 == 0


def test_smpc_toml_table(tmp_path: Path) -> None:
    fp = "sha256:" + "ab" * 32
    toml = tmp_path / "w.toml"
    toml.write_text(f'[worker]\nname = "carol"\nstate = "s"\n[smpc]\ndealer = true\n'
                    f'timeout = 5\n[smpc.peers]\nalice = "{fp}"\n')
    cfg = WorkerConfig.from_toml(toml)
    assert cfg.smpc.dealer and cfg.smpc.timeout == 5 and cfg.smpc.pins()["peer"] == {"alice": fp}
    toml.write_text('[worker]\nname = "carol"\nstate = "s"\n[smpc.peers]\nalice = "xyz"\n')
    with pytest.raises(ConfigError, match="smpc.peers.alice"):
        WorkerConfig.from_toml(toml)
    data = tmp_path / "d.csv"
    data.write_text("a\n1\n")
    toml.write_text(f'[worker]\nname = "carol"\nstate = "s"\n[smpc]\ndealer = true\n'
                    f'[assets.x]\npath = "{data}"\nmock = "{data}"\n')
    with pytest.raises(ConfigError, match="dealer"):
        WorkerConfig.from_toml(toml)
