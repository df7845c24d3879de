"""``tiermesh model keygen|sign|verify``: exit codes and the errors a person reads."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from tests.unit.modelsig.conftest import issue
from tiermesh.cli.main import app

runner = CliRunner()


def _run(*args: str | Path) -> tuple[int, str, str]:
    result = runner.invoke(app, ["model", *map(str, args)])
    return result.exit_code, result.stdout, result.stderr


def _keys(tmp_path: Path, name: str) -> tuple[Path, Path]:
    private, public = tmp_path / f"{name}.pem", tmp_path / f"{name}.pub"
    code, out, _ = _run("keygen", "--private-key", private, "--public-key", public)
    assert code == 0
    assert out.startswith("key:sha256:")
    assert private.stat().st_mode & 0o777 == 0o600
    return private, public


def test_sign_then_verify_exits_zero(tmp_path: Path, model: Path) -> None:
    private, public = _keys(tmp_path, "a")
    code, out, _ = _run("sign", model, "--private-key", private)
    assert (code, out.strip()) == (0, f"{model}.sig")
    code, out, _ = _run("verify", model, "--public-key", public)
    assert code == 0
    assert out.startswith(f"verified {model} sha256:")


def test_verify_refuses_a_flipped_byte_with_1(tmp_path: Path, model: Path) -> None:
    private, public = _keys(tmp_path, "a")
    _run("sign", model, "--private-key", private)
    data = bytearray(model.read_bytes())
    data[-1] ^= 0xFF
    model.write_bytes(bytes(data))
    code, out, err = _run("verify", model, "--public-key", public)
    assert (code, out) == (1, "")
    assert "signature_invalid" in err


def test_verify_refuses_an_untrusted_key_with_1(tmp_path: Path, model: Path) -> None:
    private, _ = _keys(tmp_path, "signer")
    _, trusted = _keys(tmp_path, "trusted")
    _run("sign", model, "--private-key", private)
    code, _, err = _run("verify", model, "--public-key", trusted)
    assert code == 1
    assert "untrusted_signer" in err


def test_verify_without_a_signature_exits_1_naming_it(tmp_path: Path, model: Path) -> None:
    _, public = _keys(tmp_path, "a")
    code, _, err = _run("verify", model, "--public-key", public)
    assert code == 1
    assert f"no signature at {model}.sig" in err


def test_an_explicit_signature_path(tmp_path: Path, model: Path) -> None:
    private, public = _keys(tmp_path, "a")
    where = tmp_path / "elsewhere.sig"
    assert _run("sign", model, "--private-key", private, "--signature", where)[0] == 0
    assert _run("verify", model, "--public-key", public)[0] == 1
    assert _run("verify", model, "--public-key", public, "--signature", where)[0] == 0


def test_bad_input_exits_2_naming_the_problem(tmp_path: Path, model: Path) -> None:
    private, public = _keys(tmp_path, "a")
    code, _, err = _run("verify", tmp_path / "absent.gguf", "--public-key", public)
    assert code == 2
    assert "absent.gguf: no such model" in err
    code, _, err = _run("sign", tmp_path / "absent.gguf", "--private-key", private)
    assert code == 2
    assert "no such model" in err
    garbage = tmp_path / "garbage.pub"
    garbage.write_text("hello")
    code, _, err = _run("verify", model, "--public-key", garbage)
    assert code == 2
    assert "garbage.pub: not a PEM public key" in err
    code, _, err = _run("sign", model, "--private-key", public)
    assert code == 2
    assert "cannot sign with this key" in err
    code, _, err = _run("verify", model)
    assert code == 2
    assert "name a signer" in err
    code, _, err = _run("keygen", "--private-key", private, "--public-key", tmp_path / "n.pub")
    assert code == 2
    assert "exists" in err


def test_certificate_identity_round_trip(tmp_path: Path, model: Path) -> None:
    pki = issue(tmp_path, "spiffe://mesh.test/signer/ci")
    code, _, err = _run(
        "sign", model, "--private-key", pki.key, "--certificate", pki.cert, "--chain", pki.roots
    )
    assert code == 0, err
    ok = _run("verify", model, "--certificate-identity", pki.identity, "--roots", pki.roots)
    assert ok[0] == 0
    assert "signer cert:spiffe://mesh.test/signer/ci" in ok[1]
    wrong = _run(
        "verify", model, "--certificate-identity", "spiffe://mesh.test/other", "--roots", pki.roots
    )
    assert wrong[0] == 1
    assert "untrusted_signer" in wrong[2]
