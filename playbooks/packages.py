"""The operator's package manifest: which update package file fits which KB, version and arch.

Update packages are not downloadable here and their file names are not certain, so the
operator supplies them in a directory with `manifest.yaml`:

    packages:
      - kb: KB954960                      # the advisory's KB
        file: WSUS3.0SP1-KB954960-x64.exe # relative to the directory, and inside it
        sha256: <64 hex>                  # checked here at load time and again by the agent
        arch: [x64]                       # host OS architectures it may run on (default both)
        fits: ">=3.1.6001.0, <3.1.6002"   # product versions it fits (VersionRange; default all)
        fits_parts: 4                     # how many version parts to compare (3 for ConfigMgr)
        args: ['/quiet', '/norestart']    # installer arguments; `{log}` becomes the log path
        success_codes: [0]
        reboot_codes: [3010, 1641]        # ERROR_SUCCESS_REBOOT_REQUIRED / _INITIATED (MsiExec docs)
        source: '\\\\files\\patches\\x.exe' # optional UNC path: the host runs it from there (no upload;
                                          # HTTP would need a download op the agent does not have)

`load_packages` raises `ManifestError` naming the file, line and field for any problem,
including a file that is missing or whose SHA-256 does not match: kbfix never runs such a package.
A `file` must resolve inside the packages directory: an absolute path, a `..` part or a symlink
leading out of it is refused (issue 20 finding 9: `../../../../etc/passwd` with its SHA-256 was
uploaded and run). The manifest is read with `inventory.safeyaml` (no alias bombs, bounded depth).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from inventory.safeyaml import YamlLimitError, safe_compose
from playbooks.version import Version, VersionRange

MANIFEST_NAMES = ("manifest.yaml", "manifest.yml", "packages.yaml")


class ManifestError(ValueError):
    """A package manifest problem: `file`, `line` (1-based or None) and `field` say where."""

    def __init__(self, message: str, *, file: Path, line: int | None = None, field: str | None = None) -> None:
        where = f"{file}" + (f":{line}" if line else "") + (f": field {field}" if field else "")
        super().__init__(f"{where}: {message}")
        self.file = file
        self.line = line
        self.field = field


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kb: str
    file: str
    sha256: str
    arch: list[str] = Field(default_factory=lambda: ["x86", "x64"])
    fits: str = "*"
    fits_parts: int = Field(4, ge=1, le=4)
    args: list[str] = Field(default_factory=list)
    success_codes: list[int] = Field(default_factory=lambda: [0])
    reboot_codes: list[int] = Field(default_factory=lambda: [3010, 1641])
    source: str | None = None
    estimated_seconds: float | None = None

    @field_validator("kb")
    @classmethod
    def _kb(cls, v: str) -> str:
        v = v.strip().upper()
        if not v.startswith("KB") or not v[2:].isdigit():
            raise ValueError("must look like KB954960")
        return v

    @field_validator("sha256", mode="before")
    @classmethod
    def _sha_text(cls, v: Any) -> Any:
        if isinstance(v, int):  # an all-digit hash reads as a YAML integer and loses its leading zeros
            raise ValueError("quote the SHA-256 in the manifest: YAML read it as a number")
        return v

    @field_validator("sha256")
    @classmethod
    def _sha(cls, v: str) -> str:
        v = v.strip().lower()
        if len(v) != 64 or any(c not in "0123456789abcdef" for c in v):
            raise ValueError("must be 64 hex digits")
        return v

    @field_validator("arch", mode="before")
    @classmethod
    def _arch(cls, v: Any) -> Any:
        items = [v] if isinstance(v, str) else v
        if isinstance(items, list):
            if any(a not in ("x86", "x64", "any") for a in items):
                raise ValueError("each arch must be x86, x64 or any")
            return ["x86", "x64"] if "any" in items else items
        return v

    @field_validator("fits")
    @classmethod
    def _fits(cls, v: str) -> str:
        VersionRange.parse(v)  # raises ValueError naming the bad clause
        return v


@dataclass(frozen=True)
class Package:
    """One verified package: local path, size (bytes) and SHA-256 checked at load time."""

    kb: str
    file: str
    path: Path
    sha256: str
    size: int
    arch: tuple[str, ...]
    fits: VersionRange
    args: tuple[str, ...]
    success_codes: tuple[int, ...]
    reboot_codes: tuple[int, ...]
    source: str | None = None
    estimated_seconds: float | None = None
    line: int | None = None

    def matches(self, kb: str, version: Version | None, arch: str | None) -> bool:
        """True when this package is for `kb`, fits `version` (None: only an unbounded `fits`)
        and may run on OS `arch` (None: any)."""
        if self.kb != kb.upper():
            return False
        if arch and arch not in self.arch:
            return False
        if version is None:
            return not self.fits.clauses
        return self.fits.contains(version)


@dataclass(frozen=True)
class PackageCatalog:
    """The packages of one directory. `find` picks the first matching manifest entry."""

    directory: Path
    packages: tuple[Package, ...] = field(default_factory=tuple)

    def find(self, kb: str, version: Version | None, arch: str | None) -> Package | None:
        """The first package for `kb` that fits `version` and `arch`, or None."""
        return next((p for p in self.packages if p.matches(kb, version, arch)), None)

    def for_kb(self, kb: str) -> list[Package]:
        """All packages listed for `kb` (to explain why none fits)."""
        return [p for p in self.packages if p.kb == kb.upper()]


def _line_map(node: yaml.Node, path: tuple[Any, ...] = ()) -> dict[tuple[Any, ...], int]:
    out = {path: node.start_mark.line + 1}
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            out.update(_line_map(v, (*path, k.value)))
            out[(*path, k.value)] = k.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            out.update(_line_map(v, (*path, i)))
    return out


def _line_of(lines: dict[tuple[Any, ...], int], loc: Sequence[Any]) -> int | None:
    for n in range(len(loc), -1, -1):
        if tuple(loc[:n]) in lines:
            return lines[tuple(loc[:n])]
    return None


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def contained_path(directory: Path, name: str, *, manifest: Path, line: int | None) -> Path:
    """`directory / name`, refusing a `name` that is absolute (POSIX or Windows: `C:\\x`, `\\\\srv`),
    has a `..` part, or resolves (through symlinks) outside `directory`. Raises ManifestError
    (field `file`). A missing file is not an error here."""
    def refuse(why: str) -> ManifestError:
        return ManifestError(f"package file {name!r} {why}: it must name a file inside the packages folder "
                             f"{directory}", file=manifest, line=line, field="file")

    parts = name.replace("\\", "/").split("/")
    if Path(name).is_absolute() or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise refuse("is an absolute path")
    if ".." in parts:
        raise refuse("has a '..' part")
    local = directory / name
    base = directory.resolve()
    target = local.resolve()  # follows symlinks, including ones in the middle of `name`
    if target != base and base not in target.parents:
        raise refuse(f"resolves to {target}, outside the folder")
    return local


def load_packages(directory: Path) -> PackageCatalog:
    """Load and verify `directory/manifest.yaml`: every file exists (unless it has a `source`
    the host reads) and matches its SHA-256. Raises ManifestError naming file, line and field."""
    directory = Path(directory)
    manifest = next((directory / n for n in MANIFEST_NAMES if (directory / n).is_file()), None)
    if manifest is None:
        raise ManifestError(f"no {MANIFEST_NAMES[0]} in the packages directory", file=directory)
    try:
        text = manifest.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ManifestError(f"not UTF-8 text (byte {exc.start})", file=manifest) from None
    except OSError as exc:
        raise ManifestError(f"cannot read: {exc.strerror or exc}", file=manifest) from None
    try:
        node = safe_compose(text)
        raw = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # noqa: S506 - safe loader
    except YamlLimitError as exc:
        raise ManifestError(exc.message, file=manifest, line=exc.line) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise ManifestError(f"not valid YAML: {exc}", file=manifest, line=mark.line + 1 if mark else None) from exc
    except (RecursionError, ValueError, OverflowError, TypeError) as exc:
        raise ManifestError(f"YAML value cannot be read ({type(exc).__name__})", file=manifest) from None
    lines = _line_map(node) if node is not None else {}
    if not isinstance(raw, dict) or not isinstance(raw.get("packages"), list):
        raise ManifestError("expected a mapping with a `packages` list", file=manifest, line=1, field="packages")
    pkgs: list[Package] = []
    for i, item in enumerate(raw["packages"]):
        try:
            e = _Entry.model_validate(item)
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ("packages", i, *err["loc"])
            raise ManifestError(err["msg"], file=manifest, line=_line_of(lines, loc), field=".".join(map(str, err["loc"]))) from exc
        line = _line_of(lines, ("packages", i, "file"))
        local = contained_path(directory, e.file, manifest=manifest, line=line)
        if local.is_file():
            digest = sha256_file(local)
            if digest != e.sha256:
                raise ManifestError(
                    f"SHA-256 of {local.name} is {digest}, manifest says {e.sha256}: refusing the package",
                    file=manifest,
                    line=_line_of(lines, ("packages", i, "sha256")),
                    field="sha256",
                )
            size = local.stat().st_size
        elif e.source:
            size = 0  # read by the host from the operator's UNC/HTTP source; the agent checks the hash
        else:
            raise ManifestError(f"package file {local} does not exist", file=manifest, line=line, field="file")
        pkgs.append(
            Package(
                kb=e.kb,
                file=Path(e.file).name,
                path=local,
                sha256=e.sha256,
                size=size,
                arch=tuple(e.arch),
                fits=VersionRange.parse(e.fits, e.fits_parts),
                args=tuple(e.args),
                success_codes=tuple(e.success_codes),
                reboot_codes=tuple(e.reboot_codes),
                source=e.source,
                estimated_seconds=e.estimated_seconds,
                line=line,
            )
        )
    return PackageCatalog(directory, tuple(pkgs))
