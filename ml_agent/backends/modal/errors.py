"""Every error class of the modal SDK as a BackendError that says what to do.

`modal_errors(doing)` wraps the calls that talk to Modal. An error is matched on its class
and then its bases (modal/exception.py), so each class of the SDK, and any it adds later
under a known base, gets the advice of its closest known class. A ValueError raised inside
modal's own code (a closed stdin, an argument it refuses) is Modal refusing the request;
one raised anywhere else is a bug of ours and is left alone.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from ml_agent.errors import BackendError

RETRY = "Retry in a moment; if it keeps failing, see status.modal.com."
REPORT = "If your config is valid (`ml-agent validate`), please report it: ml-agent should " \
    "have caught this before calling Modal."

#: modal.exception class name -> what to tell the user ({doing}, {exc} filled in).
ADVICE: dict[str, str] = {
    "AuthError": "Modal did not accept your credentials while {doing} ({exc}). Run `modal "
    "setup` (or set MODAL_TOKEN_ID and MODAL_TOKEN_SECRET), or use `--backend local`.",
    "PermissionDeniedError": "your Modal token may not do this while {doing} ({exc}). Check "
    "the workspace and environment you use (`modal profile current`, MODAL_ENVIRONMENT) and "
    "your role in it.",
    "NotFoundError": "Modal has no such object while {doing} ({exc}). Check the name in your "
    "config (`modal secret list`, `modal volume list`, `modal app list`) and the environment "
    "(MODAL_ENVIRONMENT).",
    "AlreadyExistsError": "it already exists on Modal, while {doing} ({exc}). A run's sandbox "
    "name is unique within its app: see `ml-agent ps`, or launch again for a new run id.",
    "ConflictError": "Modal refused a conflicting change while {doing} ({exc}). Retry once "
    "the other change is done; see `ml-agent ps`.",
    "InvalidError": "Modal refused the request as invalid while {doing}: {exc}. Fix the "
    "setting it names. " + REPORT,
    "ResourceExhaustedError": "Modal could not schedule the sandbox while {doing}: {exc}. The "
    "GPU type may be out of capacity or your workspace at its limit: retry later, choose "
    "another `sandbox.gpu`, or check your limits on modal.com/settings.",
    "SandboxTimeoutError": "the sandbox reached its timeout while {doing} ({exc}): the run is "
    "over. Raise `sandbox.timeout` (up to 24h) for longer runs.",
    "SandboxTerminatedError": "the sandbox was terminated while {doing} ({exc}; `ml-agent "
    "stop`, or Modal's dashboard): the run is over; see `ml-agent ps`.",
    "FunctionTimeoutError": "a function of the app ran out of time while {doing} ({exc}). " + RETRY,
    "OutputExpiredError": "Modal no longer keeps that output while {doing} ({exc}): the "
    "run's own records are in its folder on the data volume.",
    "MountUploadTimeoutError": "uploading local files to Modal timed out while {doing} "
    "({exc}). Check your network; keep file/dir layers small. " + RETRY,
    "VolumeUploadTimeoutError": "uploading to a volume timed out while {doing} ({exc}). "
    "Check your network. " + RETRY,
    "TimeoutError": "Modal timed out while {doing}: {exc}. " + RETRY,
    "ConnectionError": "cannot reach Modal while {doing}: {exc}. Check your network (or "
    "MODAL_SERVER_URL).",
    "ClientClosed": "the connection to Modal was closed while {doing} ({exc}). " + RETRY,
    "VersionError": "this modal client does not fit your workspace while {doing}: {exc}. Run "
    "`pip install -U modal`, or set `image.builder` to a version it supports.",
    "ImageBuildError": "the image build failed on Modal while {doing}: {exc}. Fix that layer "
    "in `image.layers`; the build log above says why.",
    "ExecutionError": "a function of the app failed on Modal while {doing}: {exc}. See "
    "`modal app logs <app>`; `ml-agent up` redeploys the app when its settings change.",
    "DeserializationError": "ml-agent could not read what the app returned while {doing} "
    "({exc}): the deployed app may be from another ml-agent version. Change a proxy or "
    "syncer setting or `modal app stop <app>`, and `ml-agent up` deploys it again.",
    "SerializationError": "ml-agent could not send the arguments while {doing} ({exc}). "
    + REPORT,
    "RequestSizeError": "the request to Modal was too large while {doing} ({exc}). Keep "
    "file/dir layers and tasks small enough, or put large inputs on a volume.",
    "LogsFetchError": "Modal could not return the sandbox's output while {doing} ({exc}). "
    + RETRY,
    "SandboxFilesystemError": "a file operation in the sandbox failed while {doing}: {exc}. "
    "Check the path and that the sandbox is still running (`ml-agent ps`).",
    "SnapshotCreationError": "Modal could not snapshot the sandbox while {doing}: {exc}. "
    + RETRY,
    "WorkspaceManagementError": "the workspace refused the change while {doing}: {exc}. Ask "
    "a workspace manager, or check your role on modal.com/settings.",
    "RemoteError": "the call failed on Modal while {doing}: {exc}. See `modal app logs "
    "<app>` for what the app printed.",
    "InternalError": "Modal had an internal error while {doing} ({exc}). " + RETRY,
    "ServiceError": "Modal's service failed while {doing} ({exc}). " + RETRY,
    "InternalFailure": "Modal had an internal failure while {doing} ({exc}). " + RETRY,
    "DataLossError": "Modal reported data loss while {doing} ({exc}). " + RETRY,
    "UnimplementedError": "Modal does not offer this call to this client while {doing} "
    "({exc}). Run `pip install -U modal`.",
    "Error": "Modal failed while {doing}: {exc}. " + RETRY,
}


def advice(exc: BaseException, doing: str) -> str | None:
    """The message for a modal error (by its class, then its bases), or None."""
    for cls in type(exc).__mro__:
        if cls.__module__ == "modal.exception" and cls.__name__ in ADVICE:
            return ADVICE[cls.__name__].format(doing=doing, exc=str(exc).strip() or cls.__name__)
    return None


def _raised_in_modal(exc: BaseException) -> bool:
    """The innermost frame of `exc` is modal's own code (or synchronicity's, which it uses)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    module = tb.tb_frame.f_globals.get("__name__", "") if tb is not None else ""
    return module.split(".")[0] in ("modal", "synchronicity")


@contextlib.contextmanager
def modal_errors(doing: str) -> Iterator[None]:
    """Turn the modal SDK's errors into BackendErrors that say what to do."""
    from modal import exception as mx

    try:
        yield
    except mx.Error as exc:
        raise BackendError(advice(exc, doing) or ADVICE["Error"].format(doing=doing, exc=exc)) \
            from None
    except ValueError as exc:
        if not _raised_in_modal(exc):
            raise
        raise BackendError(
            f"Modal refused the request while {doing}: {exc}. Check `ml-agent ps` (an ended "
            f"sandbox takes no input). {REPORT}"
        ) from None
