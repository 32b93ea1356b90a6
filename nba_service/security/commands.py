"""`nba token new` and `nba model keygen | sign | verify`: the operator side of docs/security.md."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_security_commands"]


def _token_new(args: argparse.Namespace) -> int:
    from nba_service.security.auth import new_token

    token, digest = new_token()
    channels = f"\n    channels: [{', '.join(args.channel)}]" if args.channel else ""
    rpcs = ", ".join(args.rpc) or "nba.v1.Decisioning/*"
    print(f"# give the client this token (shown once):\n# {token}\n"
          f"  - name: {args.name}\n    sha256: {digest}\n    rpcs: [{rpcs}]{channels}")
    return 0


def _keygen(args: argparse.Namespace) -> int:
    from nba_service.security.signing import generate_keypair

    private, public = generate_keypair()
    priv_path, pub_path = Path(f"{args.out}.key"), Path(f"{args.out}.pub")
    if priv_path.exists() and not args.force:
        print(f"error: {priv_path} exists (use --force)", file=sys.stderr)
        return 1
    priv_path.touch(mode=0o600)
    priv_path.write_bytes(private)
    pub_path.write_bytes(public)
    print(f"private key: {priv_path} (keep it with the publisher)\npublic key: {pub_path} "
          "(NBA_MODEL_PUBLIC_KEY on the servers)")
    return 0


def _sign(args: argparse.Namespace) -> int:
    from nba_service.security.signing import load_private_key, sign_artifact

    out = sign_artifact(args.artifact, load_private_key(args.key.read_bytes()))
    print(f"signed: {out}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from nba_service.scoring.artifact import ArtifactError
    from nba_service.security.signing import load_public_key, verify_artifact

    try:
        verify_artifact(args.artifact, load_public_key(args.key.read_bytes()))
    except ArtifactError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"signature ok: {args.artifact}")
    return 0


def add_security_commands(sub: Any) -> None:
    t = sub.add_parser("token", help="API tokens for the auth tokens file")
    tsub = t.add_subparsers(dest="token_command", required=True)
    tn = tsub.add_parser("new", help="print a new token and its tokens-file entry")
    tn.add_argument("--name", required=True, help="client name, e.g. chat-widget")
    tn.add_argument("--rpc", action="append", default=[],
                    help="allowed RPC, e.g. nba.v1.Decisioning/Decide or nba.v1.Admin/*")
    tn.add_argument("--channel", action="append", default=[], help="allowed channel")
    tn.set_defaults(func=_token_new)

    m = sub.add_parser("model", help="model artifact signatures (Ed25519)")
    msub = m.add_subparsers(dest="model_command", required=True)
    kg = msub.add_parser("keygen", help="write OUT.key (private) and OUT.pub (public)")
    kg.add_argument("out", help="path prefix of the key files")
    kg.add_argument("--force", action="store_true")
    kg.set_defaults(func=_keygen)
    sg = msub.add_parser("sign", help="write manifest.sig into an artifact directory")
    sg.add_argument("artifact", type=Path)
    sg.add_argument("--key", type=Path, required=True, help="private key (PEM)")
    sg.set_defaults(func=_sign)
    vf = msub.add_parser("verify", help="check an artifact's manifest.sig")
    vf.add_argument("artifact", type=Path)
    vf.add_argument("--key", type=Path, required=True, help="public key (PEM)")
    vf.set_defaults(func=_verify)
