"""Which Ray cluster `--backend ray` joins, and with which credentials, decided before `ray.init`.

Ray (2.52 and later) can require a token on every request to a cluster. `ray.init("auto")` finds
the local token by itself, but for an explicit address Ray 2.5x/2.60 sends one only when
RAY_AUTH_MODE=token is set; without it the connection fails after a wall of gRPC warnings. So
before connecting we ask the cluster's GCS one cheap question (its cluster ID), first without a
token: an answer means it needs none; "unauthenticated" means it wants one, which we then look
for where Ray documents it (RAY_AUTH_TOKEN, the file RAY_AUTH_TOKEN_PATH names, ~/.ray/auth_token),
check with a second question, and switch this process to token mode the way Ray's own
`ray.init("auto")` does. A missing or rejected token is one line saying how to provide it.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import XvalError

PROBE_TIMEOUT_S = 10.0
GET_CLUSTER_ID = "/ray.rpc.NodeInfoGcsService/GetClusterId"
HOW_TO_GET_A_TOKEN = ("copy the cluster's token (`ray get-auth-token` on its head node) to ~/.ray/auth_token, "
                      "or set RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH to a file holding it)")


def cluster_address(address: str | None) -> str | None:
    """--address, else RAY_ADDRESS, as Ray's own tools read them; None: start a local Ray."""
    address = address or os.environ.get("RAY_ADDRESS") or None
    return None if address == "local" else address


def find_token() -> tuple[str | None, str]:
    """The token and where it came from, in Ray's documented order of precedence."""
    if os.environ.get("RAY_AUTH_TOKEN", "").strip():
        return os.environ["RAY_AUTH_TOKEN"].strip(), "RAY_AUTH_TOKEN"
    path = Path(os.environ["RAY_AUTH_TOKEN_PATH"]) if os.environ.get("RAY_AUTH_TOKEN_PATH") else \
        Path.home() / ".ray" / "auth_token"
    try:
        token = path.read_text().strip()
    except OSError:
        token = ""
    return token or None, str(path)


def _gcs_address(address: str) -> str | None:
    """host:port of the GCS to probe; None where we cannot tell (Ray Client `ray://`, not found)."""
    if "://" in address:
        return None
    if address == "auto":
        try:  # Ray's own lookup: RAY_ADDRESS, then the last `ray start` on this machine
            from ray._private.services import canonicalize_bootstrap_address

            return canonicalize_bootstrap_address("auto")
        except Exception:
            return None  # ray.init("auto") will say what is wrong
    return address


def _ask_cluster_id(address: str, token: str | None):
    """The gRPC status code of one GetClusterId call (OK when it answered)."""
    import grpc

    metadata = [("authorization", f"Bearer {token}")] if token else []
    with grpc.insecure_channel(address) as channel:
        call = channel.unary_unary(GET_CLUSTER_ID, request_serializer=lambda _: b"",
                                   response_deserializer=lambda data: data)
        try:
            call(None, timeout=PROBE_TIMEOUT_S, metadata=metadata)
        except grpc.RpcError as exc:
            return exc.code()
    return grpc.StatusCode.OK


def _enable_token_mode() -> None:
    """What Ray's ray.init('auto') does when it finds a local token: RAY_AUTH_MODE=token for this
    process, and Ray's cached configuration re-read so it sees it."""
    os.environ["RAY_AUTH_MODE"] = "token"
    try:
        from ray._raylet import Config

        Config.initialize("")
    except (ImportError, AttributeError):  # a Ray that reads the mode at ray.init
        pass


def check_cluster(address: str | None) -> None:
    """prepare_authentication for the cluster --address (else RAY_ADDRESS) names, if any."""
    address = cluster_address(address)
    if address:
        prepare_authentication(address)


def prepare_authentication(address: str) -> None:
    """Make `ray.init(address)` authenticate as the cluster requires, or say in one line why not."""
    import grpc

    gcs = _gcs_address(address)
    if gcs is None:
        return
    code = _ask_cluster_id(gcs, None)
    if code == grpc.StatusCode.UNAVAILABLE:
        raise XvalError(f"--backend ray: no Ray cluster answers at {address} ({gcs}): start one with "
                        f"`ray start --head`, or check the address (the head's GCS port, 6379 by default)")
    if code != grpc.StatusCode.UNAUTHENTICATED:
        return  # it answered (no token needed), or something ray.init will report itself
    if os.environ.get("RAY_AUTH_MODE", "").lower() == "disabled":
        raise XvalError(f"--backend ray: the Ray cluster at {address} requires token authentication but "
                        f"RAY_AUTH_MODE=disabled is set: unset it and {HOW_TO_GET_A_TOKEN}")
    token, source = find_token()
    if token is None:
        raise XvalError(f"--backend ray: the Ray cluster at {address} requires token authentication and no "
                        f"token was found (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH, {source}): {HOW_TO_GET_A_TOKEN}")
    if _ask_cluster_id(gcs, token) == grpc.StatusCode.UNAUTHENTICATED:
        raise XvalError(f"--backend ray: the Ray cluster at {address} rejected the token from {source}: "
                        f"use this cluster's token ({HOW_TO_GET_A_TOKEN})")
    _enable_token_mode()
