"""The JSON types each agent answer must have (remoting/PROTOCOL.md, "Response" and "Ops").

A host's answer is untrusted: a compromised or broken host can send a well-framed response whose
values have the wrong JSON type (a list where a version string belongs, a string for a
boolean). Checked here, at the protocol boundary, such an answer is a `ProtocolError` for that
host (exit 4, "protocol error from host"); unchecked, it reached the playbooks and crashed the
run as an internal error (issue 20 finding 12).

Models are strict on the types of the fields PROTOCOL.md lists; a missing field is left to the
playbooks (which treat it as unknown), and extra fields are allowed so a newer agent may add some. `check_result(op, data)`
and `check_host(info)` raise `ProtocolError`.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, StrictBool, StrictFloat, StrictInt, StrictStr, ValidationError

from remoting.errors import ProtocolError

Int = StrictInt
Num = StrictInt | StrictFloat
Str = StrictStr
OptStr = StrictStr | None


class _Shape(BaseModel):
    # Extra fields pass unchecked ("ignore" accepts exactly what "allow" does; only the check is
    # kept, not the model, so there is no need to copy the extras: ~20% less CPU per answer).
    model_config = ConfigDict(extra="ignore", strict=True)


class HostInfo(_Shape):
    computer_name: Str | None = None
    os_version: Str | None = None
    arch: Str | None = None
    culture: Str | None = None
    ps_version: Str | None = None


class EnvExpand(_Shape):
    value: Str | None = None


class RegValue(_Shape):
    type: Str | None = None
    value: Str | Int | list[Str] | None = None


class RegView(_Shape):
    exists: StrictBool | None = None
    path: OptStr = None
    values: dict[str, RegValue] | None = None
    subkeys: list[Str] | None = None


class RegistryValues(_Shape):
    views: dict[str, RegView] | None = None


class FileInfo(_Shape):
    exists: StrictBool | None = None
    path: OptStr = None
    size: Int | None = None
    mtime: OptStr = None
    file_version: OptStr = None
    file_version_string: OptStr = None
    product_version: OptStr = None
    sha256: OptStr = None


class LogMatch(_Shape):
    pattern: Int | None = None
    offset: Int | None = None
    line: Str | None = None
    cut: StrictBool | None = None
    before: list[Str] | None = None
    after: list[Str] | None = None


class LogFile(_Shape):
    path: Str | None = None
    exists: StrictBool | None = None
    size: Int | None = None
    encoding: OptStr = None
    start_offset: Int | None = None
    end_offset: Int | None = None
    matches: list[LogMatch] | None = None
    patterns_full: list[Int] | None = None


class LogScan(_Shape):
    files: list[LogFile] | None = None


class Product(_Shape):
    name: OptStr = None
    version: OptStr = None
    publisher: OptStr = None
    product_code: OptStr = None
    view: OptStr = None
    install_date: OptStr = None


class ProductsList(_Shape):
    products: list[Product] | None = None


class Service(_Shape):
    exists: StrictBool | None = None
    status: OptStr = None
    start_mode: OptStr = None


class ServiceStatus(_Shape):
    services: dict[str, Service] | None = None


class Approval(_Shape):
    group: OptStr = None
    action: OptStr = None


class WsusUpdate(_Shape):
    id: Str | None = None
    title: OptStr = None
    declined: StrictBool | None = None
    approvals: list[Approval] | None = None


class WsusFind(_Shape):
    available: StrictBool | None = None
    updates: list[WsusUpdate] | None = None


class FileUpload(_Shape):
    path: OptStr = None
    size: Int | None = None


class InstallerRun(_Shape):
    exit_code: Int | None = None
    outcome: Str | None = None
    seconds: Num | None = None
    log_tail: OptStr = None


class ServiceRestart(_Shape):
    status: OptStr = None


class WsusDecline(_Shape):
    id: OptStr = None
    declined: StrictBool | None = None


class WsusApprove(_Shape):
    id: OptStr = None
    approvals: list[Approval] | None = None


class RebootState(_Shape):  # reboot (issue 21)
    cbs_reboot_pending: StrictBool | None = None
    wu_reboot_required: StrictBool | None = None
    pending_file_renames: list[Str] | None = None
    pending_file_renames_count: Int | None = None
    last_boot: OptStr = None
    last_boot_error: OptStr = None


class Reboot(_Shape):  # reboot (issue 21)
    requested: OptStr = None
    delay: Int | None = None
    last_boot: OptStr = None
    exit_code: Int | None = None


class HostEnvironment(_Shape):
    """`host.environment` (issue 17, read by `kbfix doctor`)."""

    ps_version: OptStr = None
    clr_version: OptStr = None
    dotnet: list[Str] | None = None
    culture: OptStr = None
    os_language: OptStr = None
    ansi_codepage: Int | None = None
    oem_codepage: Int | None = None
    process_64bit: StrictBool | None = None
    os_64bit: StrictBool | None = None
    fips_policy: StrictBool | None = None
    user: OptStr = None
    elevated: StrictBool | None = None
    local_account: StrictBool | None = None
    local_account_token_filter_policy: Int | None = None


SHAPES: dict[str, type[_Shape]] = {
    "env.expand": EnvExpand,
    "registry.values": RegistryValues,
    "file.info": FileInfo,
    "log.scan": LogScan,
    "products.list": ProductsList,
    "service.status": ServiceStatus,
    "wsus.find_update": WsusFind,
    "file.upload": FileUpload,
    "installer.run": InstallerRun,
    "service.restart": ServiceRestart,
    "wsus.decline_update": WsusDecline,
    "wsus.approve_update": WsusApprove,
    "system.reboot_state": RebootState,
    "system.reboot": Reboot,
    "host.environment": HostEnvironment,
}


#: The models' own validators (pydantic-core's), called directly: `model_validate` wraps the same
#: call in a Python frame and its keyword handling, ~1 us per call and ~20 calls per answer.
_VALIDATE = {name: shape.__pydantic_validator__.validate_python for name, shape in SHAPES.items()}
_VALIDATE_HOST = HostInfo.__pydantic_validator__.validate_python


def _where(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err.get("loc", ())) or "(document)"
    return f"{loc}: {err.get('msg')}"


def check_result(op_name: str, data: Any, *, host: str | None = None) -> None:
    """Raise ProtocolError when `data` (an ok result of `op_name`) does not have the documented
    JSON types. Unknown op names are not checked (their results are never read)."""
    validate = _VALIDATE.get(op_name)
    if validate is None:
        return
    try:
        validate(data)
    except ValidationError as exc:
        raise ProtocolError(
            f"protocol error from host: the answer to {op_name} has the wrong type at {_where(exc)}", host=host
        ) from None


def check_host(info: Any, *, host: str | None = None) -> None:
    """Raise ProtocolError when the response's `host` object has non-text identity fields."""
    try:
        _VALIDATE_HOST(info)
    except ValidationError as exc:
        raise ProtocolError(f"protocol error from host: its identity has the wrong type at {_where(exc)}",
                            host=host) from None
