"""The fixture schema: pydantic models of a host fixture file (documented in winlab/README.md).

Validation only; `winlab.fixtures` turns validated models into host state. `faults:` mirrors
the contract dataclass `winlab.faults.Faults` field by field, so the two cannot drift.
"""

from __future__ import annotations

import typing
from dataclasses import fields
from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, create_model, model_validator

from winlab.faults import Faults

Encoding = Literal["utf-8", "utf-8-bom", "utf-16le", "utf-16be", "ansi", "raw"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OsModel(_Model):
    """`os:` of a host."""

    version: StrictStr = "5.2.3790"
    arch: Literal["x86", "x64"] = "x64"
    culture: StrictStr = "en-US"


class GenerateModel(_Model):
    """`generate:` of a file: a large synthetic log (see winlab.generated_logs)."""

    size_mb: float = Field(gt=0, le=4096)
    seed: int = 1
    matches: list[StrictStr] = []


class FileModel(_Model):
    """One file: version facts and at most one content source."""

    version: StrictStr | None = None
    version_string: StrictStr | None = None
    product_version: StrictStr | None = None
    text: StrictStr | None = None
    source: StrictStr | None = None
    data_b64: StrictStr | None = None
    generate: GenerateModel | None = None
    encoding: Encoding = "utf-8"
    newline: Literal["crlf", "lf", "keep"] = "crlf"
    mtime: datetime | None = None

    @model_validator(mode="after")
    def _one_content(self) -> FileModel:
        given = [k for k in ("text", "source", "data_b64", "generate") if getattr(self, k) is not None]
        if len(given) > 1:
            raise ValueError(f"give at most one of text/source/data_b64/generate, not {given}")
        return self


class RegTypedModel(_Model):
    """A registry value with an explicit type (`{type: REG_EXPAND_SZ, value: '%windir%\\x'}`)."""

    type: Literal["REG_SZ", "REG_EXPAND_SZ", "REG_DWORD", "REG_QWORD", "REG_MULTI_SZ", "REG_BINARY"]
    value: StrictStr | StrictInt | list[StrictStr]


RegValueModel = StrictStr | StrictInt | list[StrictStr] | RegTypedModel


class ProductModel(_Model):
    """An installed product (an Uninstall entry)."""

    name: StrictStr
    version: StrictStr | None = None
    publisher: StrictStr | None = None
    code: StrictStr | None = None
    view: Literal["64", "32"] | None = None
    install_date: StrictStr | None = None


class PatchModel(_Model):
    """A Windows Installer patch registration (`HKLM\\...\\Installer\\UserData\\S-1-5-18\\Products\\
    <packed product>\\Patches\\<packed patch>`): product and patch codes as GUIDs, DisplayName,
    State (1 applied, 2 superseded, 4 obsoleted: MS docs "Patch.PatchProperty method")."""

    product: StrictStr = Field(pattern=r"^\{?[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}\}?$")
    code: StrictStr = Field(pattern=r"^\{?[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}\}?$")
    name: StrictStr
    state: Literal[1, 2, 4] = 1
    installed: StrictStr | None = None


class ServiceModel(_Model):
    """A service with its start mode."""

    status: StrictStr = "Running"
    start_mode: StrictStr = "Auto"


class SetsModel(_Model):
    """What an installer changes: files, registry values, products added/removed, services."""

    files: dict[StrictStr, FileModel] = {}
    registry: dict[StrictStr, dict[StrictStr, RegValueModel]] = {}
    products: list[StrictStr | ProductModel] = []
    remove_products: list[StrictStr] = []
    patches: list[PatchModel] = []
    services: dict[StrictStr, StrictStr | ServiceModel] = {}


class InstallerModel(_Model):
    """What happens when a package whose file name matches `match` (wildcard) runs."""

    match: StrictStr
    exit_code: int = 0
    seconds: float = Field(default=0.0, ge=0)
    sets: SetsModel = SetsModel()
    log: StrictStr | None = None
    # reboot (issue 21): changes applied at the next boot (files in use: MoveFileEx
    # MOVEFILE_DELAY_UNTIL_REBOOT renames, listed in PendingFileRenameOperations meanwhile).
    at_boot: SetsModel | None = None


class BootModel(_Model):
    """`boot:` of a host: last boot time, how long a restart keeps it down (seconds, scaled by
    time_scale), seconds from the restart's start until WinRM stops, whether it comes back, seconds
    after the boot until delayed-start services clear Windows Update's RebootRequired key."""

    last_boot: datetime = datetime(2008, 8, 1, 6, 0, 0, tzinfo=timezone.utc)
    reboot_seconds: float = Field(default=60.0, ge=0)
    shutdown_seconds: float = Field(default=5.0, ge=0)
    comes_back: bool = True
    delayed_start_seconds: float = Field(default=0.0, ge=0)


class ApprovalModel(_Model):
    """One approval of a WSUS update in a fixture: target group and action (default Install)."""

    group: StrictStr
    # The approval actions WSUS 3.0 stores (UpdateApprovalAction; `All` is only a query value).
    action: Literal["Install", "Uninstall", "NotApproved"] = "Install"


class WsusUpdateModel(_Model):
    """One update of the WSUS catalog (for the wsus.* ops)."""

    id: StrictStr
    title: StrictStr
    declined: bool = False
    approvals: list[ApprovalModel] = []
    requires_license: bool = False


class WsmanModel(_Model):
    """WinRM service settings (defaults: Windows' WinRM 2.0 defaults, see winlab.hostapi)."""

    max_envelope_kb: int = Field(default=500, ge=1)
    max_shells_per_user: int = Field(default=30, ge=1)
    idle_timeout_s: float = Field(default=7200.0, gt=0)
    #: WinRM service CbtHardeningLevel (MS docs "Installation and configuration for Windows Remote Management").
    cbt_hardening_level: Literal["None", "Relaxed", "Strict"] = "Relaxed"


def _faults_model() -> type[BaseModel]:
    # Mirror the contract dataclass winlab.faults.Faults so the fixture keys never drift from it.
    hints = typing.get_type_hints(Faults)
    spec: dict[str, Any] = {f.name: (hints[f.name], f.default) for f in fields(Faults)}
    return create_model("FaultsModel", __config__=ConfigDict(extra="forbid"), **spec)


FaultsModel = _faults_model()


class HostModel(_Model):
    """One host of a fixture file (see winlab/README.md)."""

    name: StrictStr = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
    site: StrictStr | None = None
    os: OsModel = OsModel()
    accounts: dict[StrictStr, StrictStr] = {}
    registry: dict[StrictStr, dict[StrictStr, RegValueModel]] = {}
    files: dict[StrictStr, FileModel] = {}
    services: dict[StrictStr, StrictStr | ServiceModel] = {}
    products: list[StrictStr | ProductModel] = []
    installers: list[InstallerModel] = []
    wsus_updates: list[WsusUpdateModel] = []
    wsus_api: bool | None = None
    wsus_groups: list[StrictStr] = []
    wsus_replica: bool = False
    patches: list[PatchModel] = []
    faults: FaultsModel = FaultsModel()  # type: ignore[valid-type]
    wsman: WsmanModel = WsmanModel()
    time_scale: float = Field(default=1.0, ge=0)
    boot: BootModel = BootModel()


class FixtureFileModel(_Model):
    """A fixture file: a list of hosts. Top-level keys starting with `x-` hold YAML anchors
    and are ignored."""

    hosts: list[HostModel]

    @model_validator(mode="before")
    @classmethod
    def _drop_anchor_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if not (isinstance(k, str) and k.startswith("x-"))}
        return data
