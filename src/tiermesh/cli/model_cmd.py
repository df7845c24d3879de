"""``tiermesh model …``: sign and verify model files (a GGUF) or model directories.

Signatures are OpenSSF model-signing bundles, written beside the model as ``PATH.sig``
unless ``--signature`` says otherwise; signing and verifying are offline (EC keys, or a
signing certificate and its chain).

Exit codes of ``verify``: 0 only when the signature is valid for one of the given signers;
1 when it is not (missing signature, invalid signature or changed bytes, untrusted signer);
2 for bad input (no such model, unreadable key or certificate, no signer given). ``sign``
and ``keygen`` exit 0 on success and 2 on bad input. Errors go to stderr, naming the file
and the problem; the result goes to stdout.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tiermesh.modelsig import (
    BadKeyError,
    CertificateSigner,
    KeySigner,
    ModelMissingError,
    ModelSignatureError,
    TrustedSigner,
    generate_key_pair,
    sign_model,
    verify_model,
)

__all__ = ["app"]

app = typer.Typer(no_args_is_help=True, help="Sign and verify model files and directories.")

_BAD_INPUT = 2
_REFUSED = 1


def _fail(message: str, code: int) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


@app.command("keygen")
def keygen(
    private_key: Annotated[Path, typer.Option("--private-key", help="Where to write the key.")],
    public_key: Annotated[Path, typer.Option("--public-key", help="Where to write its pair.")],
) -> None:
    """Write a new EC P-256 signing key (mode 0600) and its public key."""
    try:
        signer = generate_key_pair(private_key, public_key)
    except (FileExistsError, OSError) as exc:
        raise _fail(str(exc), _BAD_INPUT) from None
    typer.echo(signer.name)


@app.command("sign")
def sign(
    path: Annotated[Path, typer.Argument(help="The model: a file (GGUF) or a directory.")],
    private_key: Annotated[Path, typer.Option("--private-key", help="EC private key (PEM).")],
    signature: Annotated[
        Path | None, typer.Option("--signature", help="Where to write it (default PATH.sig).")
    ] = None,
    certificate: Annotated[
        Path | None,
        typer.Option("--certificate", help="Signing certificate (PEM) of the private key."),
    ] = None,
    chain: Annotated[
        list[Path] | None,
        typer.Option("--chain", help="Intermediate/root certificates (PEM); repeatable."),
    ] = None,
    password_file: Annotated[
        Path | None, typer.Option("--password-file", help="Password of an encrypted key.")
    ] = None,
) -> None:
    """Sign a model; prints the signature's path."""
    if chain and certificate is None:
        raise _fail("--chain needs --certificate", _BAD_INPUT)
    password = None
    if password_file is not None:
        try:
            password = password_file.read_text().strip()
        except OSError as exc:
            raise _fail(f"cannot read --password-file: {exc}", _BAD_INPUT) from None
    try:
        written = sign_model(
            path,
            private_key=private_key,
            signature=signature,
            password=password,
            certificate=certificate,
            chain=tuple(chain or ()),
        )
    except ModelSignatureError as exc:
        raise _fail(str(exc), _BAD_INPUT) from None
    typer.echo(str(written))


def _signers(
    public_keys: list[Path], identity: str | None, roots: Path | None
) -> list[TrustedSigner]:
    signers: list[TrustedSigner] = []
    for key_file in public_keys:
        try:
            signers.append(KeySigner.from_pem(key_file.read_bytes()))
        except (OSError, ValueError) as exc:
            raise BadKeyError(key_file, str(exc)) from None
    if (identity is None) != (roots is None):
        raise _fail("--certificate-identity and --roots go together", _BAD_INPUT)
    if identity is not None and roots is not None:
        try:
            signers.append(CertificateSigner.from_pem(identity, roots.read_bytes()))
        except (OSError, ValueError) as exc:
            raise BadKeyError(roots, str(exc)) from None
    if not signers:
        raise _fail(
            "name a signer: --public-key, or --certificate-identity with --roots", _BAD_INPUT
        )
    return signers


@app.command("verify")
def verify(
    path: Annotated[Path, typer.Argument(help="The model: a file (GGUF) or a directory.")],
    public_key: Annotated[
        list[Path] | None,
        typer.Option("--public-key", help="A trusted EC public key (PEM); repeatable."),
    ] = None,
    certificate_identity: Annotated[
        str | None,
        typer.Option("--certificate-identity", help="Trusted identity (URI or e-mail SAN)."),
    ] = None,
    roots: Annotated[
        Path | None, typer.Option("--roots", help="CA certificates (PEM) the identity chains to.")
    ] = None,
    signature: Annotated[
        Path | None, typer.Option("--signature", help="The signature (default PATH.sig).")
    ] = None,
) -> None:
    """Verify a model; exit 0 only when a trusted signer signed exactly these bytes."""
    try:
        signers = _signers(list(public_key or ()), certificate_identity, roots)
        verified = verify_model(path, signers, signature=signature)
    except (BadKeyError, ModelMissingError) as exc:
        raise _fail(str(exc), _BAD_INPUT) from None
    except ModelSignatureError as exc:
        raise _fail(f"{exc.reason}: {exc}", _REFUSED) from None
    typer.echo(f"verified {verified.path} {verified.digest} signer {verified.signer}")
