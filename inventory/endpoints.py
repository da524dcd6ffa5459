"""One host's connection: the settings that choose transport and authentication, validated, and
the `Endpoint` built from them (scheme from the port as Ansible's winrm plugin does, timeouts,
the password looked up through `inventory.credentials`).

Connection settings, lowest first: kbfix `defaults:`; the Ansible connection variables
(`ANSIBLE_VARS`, mapped as Ansible's winrm connection plugin reads them); kbfix host fields.
They are validated with a pydantic model, so a bad value names the variable, file and line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from inventory.credentials import CredentialContext, resolve_password
from inventory.data import HostData, Origin
from inventory.errors import InventoryError
from inventory.masking import is_secret_name
from remoting.endpoint import Endpoint, Secret, Timeouts

# setting → inventory variables that set it; when several are present the last listed wins
# (the more specific name), as in Ansible's connection-plugin option resolution.
ANSIBLE_VARS: dict[str, tuple[str, ...]] = {
    "connection": ("ansible_connection",),
    "address": ("ansible_host",),
    "port": ("ansible_port",),
    "scheme": ("ansible_winrm_scheme",),
    "path": ("ansible_winrm_path",),
    "transport": ("ansible_winrm_transport",),
    "username": ("ansible_user", "ansible_winrm_user"),
    "password": ("ansible_password", "ansible_winrm_pass", "ansible_winrm_password"),
    "cert_validation": ("ansible_winrm_server_cert_validation",),
    "ca_trust_path": ("ansible_winrm_ca_trust_path",),
    "message_encryption": ("ansible_winrm_message_encryption",),
    "allow_unencrypted": ("kbfix_allow_unencrypted",),
    "timeouts.connect": ("ansible_winrm_connection_timeout",),
    "timeouts.operation": ("ansible_winrm_operation_timeout_sec",),
    "timeouts.read": ("ansible_winrm_read_timeout_sec",),
    "timeouts.command": ("kbfix_command_timeout",),
    "password_env": ("kbfix_password_env",),
    "password_keyring": ("kbfix_password_keyring",),
    "service": ("ansible_winrm_service",),
    "kerberos_hostname_override": ("ansible_winrm_kerberos_hostname_override",),
    "kerberos_delegation": ("ansible_winrm_kerberos_delegation",),
    "site": ("site", "kbfix_site"),
}
# setting → ConnectionSettings field (connection, password and site are handled apart)
FIELD_OF: dict[str, str] = {
    key: key.split(".", 1)[1] if key.startswith("timeouts.") else key
    for key in ANSIBLE_VARS
    if key not in ("connection", "password", "site")
}
WINRM_HTTP_PORT = 5985  # Ansible winrm plugin: scheme defaults to http only on this port, else https

_TRANSPORT_ALIASES = {"plaintext": "basic", "ssl": "basic"}  # pywinrm's names for Basic over http/https

Port = Annotated[int, Field(ge=1, le=65535)]
Seconds = Annotated[float, Field(gt=0, le=86400)]


class ConnectionSettings(BaseModel):
    """Validated effective connection settings of one WinRM host (lax: INI values are strings)."""

    model_config = ConfigDict(extra="forbid")

    address: str
    port: Port | None = None
    scheme: Literal["https", "http"] | None = None
    path: str = "/wsman"
    transport: Literal["ntlm", "kerberos", "basic", "credssp", "certificate"] = "ntlm"
    username: str | None = None
    cert_validation: Literal["validate", "ignore"] = "validate"
    ca_trust_path: str | None = None
    message_encryption: Literal["auto", "always", "never"] = "auto"
    allow_unencrypted: bool = False
    connect: Seconds | None = None
    operation: Seconds | None = None
    read: Seconds | None = None
    command: Seconds | None = None
    password_env: str | None = None
    password_keyring: str | None = None
    service: str = "HTTP"
    kerberos_hostname_override: str | None = None
    kerberos_delegation: bool = False


@dataclass
class Setting:
    """One effective setting: its value, the variable or kbfix key that set it, and where."""

    value: Any
    source: str  # the variable or kbfix key that set it
    origin: Origin | None


class EndpointBuilder:
    """Builds each host's `Endpoint` from its settings; hosts with the same limits share one
    `Timeouts` object (immutable)."""

    def __init__(self, creds: CredentialContext) -> None:
        self.creds = creds
        self._timeouts_cache: dict[tuple[float, float, float, float], Timeouts] = {}

    def endpoint(self, host: HostData, settings: dict[str, Setting]) -> tuple[Endpoint, str | None]:
        raw: dict[str, Any] = {"address": host.name}
        for key, given in settings.items():
            field = FIELD_OF.get(key)
            if field is not None:
                # A vault-decrypted connection setting (a user name, say) is needed in the clear here.
                raw[field] = opened(given.value)
        if raw.get("transport") is not None:
            raw["transport"] = normalise_transport(raw["transport"])
        try:
            cs = ConnectionSettings.model_validate(raw)
        except ValidationError as exc:
            err = exc.errors(include_input=False, include_url=False)[0]
            field = str(err["loc"][0]) if err["loc"] else ""
            setting = next((k for k, f in FIELD_OF.items() if f == field), field)
            bad = settings.get(setting)
            message = err["msg"]
            if err["type"] == "literal_error" and bad is not None and not is_secret_name(bad.source):
                message += f" (got {bad.value!r})"
            raise error_at(f"host {host.name!r}: {message}", bad.origin if bad else host.origin,
                       bad.source if bad else field) from None
        scheme = cs.scheme or ("http" if cs.port == WINRM_HTTP_PORT else "https")
        timeouts = self._timeouts(host, cs, settings)
        password_setting = settings.get("password")
        try:
            password, source = resolve_password(
                host.name,
                cs.transport,
                cs.username,
                None if password_setting is None or password_setting.value is None else as_text(password_setting.value),
                password_setting.source if password_setting else None,
                cs.password_env,
                cs.password_keyring,
                self.creds,
            )
        except InventoryError as exc:
            origin = host.origin
            raise InventoryError(
                exc.message, file=origin.file if origin else None, line=origin.line if origin else None,
                field=exc.field,
            ) from None
        endpoint = Endpoint(
            host=host.name,
            address=cs.address,
            port=cs.port,
            scheme=scheme,
            path=cs.path,
            transport=cs.transport,
            username=cs.username,
            password=password,
            cert_validation=cs.cert_validation,
            ca_trust_path=cs.ca_trust_path,
            message_encryption=cs.message_encryption,
            allow_unencrypted=cs.allow_unencrypted,
            timeouts=timeouts,
            service=cs.service,
            kerberos_hostname_override=cs.kerberos_hostname_override,
            kerberos_delegation=cs.kerberos_delegation,
        )
        return endpoint, source

    def _timeouts(self, host: HostData, cs: ConnectionSettings, settings: dict[str, Setting]) -> Timeouts:
        base = Timeouts()
        operation = cs.operation if cs.operation is not None else base.operation
        read = cs.read
        if read is None:
            # pywinrm requires read > operation; keep the default gap when only operation is set.
            read = max(base.read, operation + (base.read - base.operation))
        elif read <= operation:
            s = settings.get("timeouts.read")
            raise error_at(
                f"host {host.name!r}: read timeout ({read:g} s) must be longer than the operation timeout "
                f"({operation:g} s)", s.origin if s else None, s.source if s else "timeouts.read",
            )
        key = (cs.connect if cs.connect is not None else base.connect, operation, read,
               cs.command if cs.command is not None else base.command)
        timeouts = self._timeouts_cache.get(key)
        if timeouts is None:  # immutable, so hosts with the same limits share one object
            timeouts = self._timeouts_cache[key] = Timeouts(connect=key[0], operation=key[1], read=key[2], command=key[3])
        return timeouts


def normalise_transport(value: Any) -> Any:
    """Ansible allows a list or a comma-separated string; kbfix uses the first entry."""
    if isinstance(value, list) and value:
        value = value[0]
    if isinstance(value, str):
        value = value.split(",")[0].strip().lower()
        return _TRANSPORT_ALIASES.get(value, value)
    return value


def opened(value: Any) -> Any:
    """`value` with Secrets (from a vault-encrypted vars file) opened, lists included."""
    if isinstance(value, Secret):
        return value.reveal()
    if isinstance(value, list):
        return [opened(v) for v in value]
    return value


def as_text(value: Any) -> str:
    """A setting's value as text; a Secret (vault-decrypted or rendered from one) is opened here
    only to be wrapped again by `resolve_password`."""
    return value.reveal() if isinstance(value, Secret) else str(value)


def error_at(message: str, origin: Origin | None, field: str | None) -> InventoryError:
    return InventoryError(
        message, file=origin.file if origin else None, line=origin.line if origin else None, field=field
    )
