"""agent.ps1 and bootstrap.ps1 parse with the real PowerShell grammar (tree-sitter-powershell) and
use nothing newer than Windows PowerShell 2.0 (the agent runs on Server 2003/2008 hosts)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import tree_sitter
import tree_sitter_powershell

from remoting.agent_delivery import AGENT_PATH, BOOTSTRAP_PATH

# Cmdlets that PowerShell 2.0 does not have (3.0+), as command names.
PS3_COMMANDS = {
    "convertto-json", "convertfrom-json", "invoke-webrequest", "invoke-restmethod", "get-ciminstance",
    "invoke-cimmethod", "new-ciminstance", "get-filehash", "expand-archive", "compress-archive",
}
PS3_OPERATORS = {"-in", "-notin", "-cin", "-cnotin", "-iin", "-inotin", "-shl", "-shr"}
PS3_STATEMENTS = {"class_statement", "enum_statement", "using_statement"}
PS3_VARIABLES = {"$psitem", "$using"}
PS3_PARAMETERS = {"-raw"}  # Get-Content -Raw is PowerShell 3.0


def _parser() -> tree_sitter.Parser:
    return tree_sitter.Parser(tree_sitter.Language(tree_sitter_powershell.language()))


def _walk(node: tree_sitter.Node) -> Iterator[tree_sitter.Node]:
    yield node
    for child in node.children:
        yield from _walk(child)


def problems(source: bytes) -> list[str]:
    """Syntax errors and PowerShell 3+ constructs in `source`, as 'line N: what' strings."""
    tree = _parser().parse(source)
    found: list[str] = []
    for n in _walk(tree.root_node):
        line = n.start_point[0] + 1
        text = source[n.start_byte : n.end_byte].decode("utf-8", "replace")
        low = text.lower()
        if n.type == "ERROR" or n.is_missing:
            found.append(f"line {line}: syntax error near {text[:40]!r}")
        elif n.type in PS3_STATEMENTS:
            found.append(f"line {line}: {n.type} needs PowerShell 5")
        elif n.type == "comparison_operator" and low in PS3_OPERATORS:
            found.append(f"line {line}: operator {text} needs PowerShell 3")
        elif n.type == "command_name" and low in PS3_COMMANDS:
            found.append(f"line {line}: cmdlet {text} needs PowerShell 3")
        elif n.type == "command_parameter" and low in PS3_PARAMETERS:
            found.append(f"line {line}: parameter {text} needs PowerShell 3")
        elif n.type == "variable" and low.split(":")[0] in PS3_VARIABLES:
            found.append(f"line {line}: variable {text} needs PowerShell 3")
        elif n.type == "type_literal" and low.replace(" ", "") == "[ordered]":
            found.append(f"line {line}: [ordered] needs PowerShell 3")
        elif n.type == "invokation_expression" and n.child_count >= 2:
            member = next((c for c in n.children if c.type == "member_name"), None)
            if (
                member is not None
                and n.children[0].type == "type_literal"
                and source[member.start_byte : member.end_byte].lower() == b"new"
            ):
                found.append(f"line {line}: [Type]::new() needs PowerShell 5")
    return found


@pytest.mark.parametrize("path", [AGENT_PATH, BOOTSTRAP_PATH], ids=["agent.ps1", "bootstrap.ps1"])
def test_script_parses_and_is_powershell_2(path) -> None:  # type: ignore[no-untyped-def]
    source = path.read_bytes()
    assert source, f"{path.name} is empty"
    assert problems(source) == []


def test_agent_is_ascii_and_has_no_bom() -> None:
    # Sent as UTF-8 in base64; ASCII keeps it identical under any console codepage.
    data = AGENT_PATH.read_bytes()
    assert not data.startswith(b"\xef\xbb\xbf")
    data.decode("ascii")


@pytest.mark.parametrize(
    "snippet",
    [
        b"$a = {",
        b"if ($x -in $y) { 1 }",
        b"if ($x -notin $y) { 1 }",
        b"$h = [ordered]@{ a = 1 }",
        b"$o = [System.Text.StringBuilder]::new()",
        b"class Foo { }",
        b"$x | ConvertTo-Json",
        b"$d = ConvertFrom-Json $t",
        b"Get-Content -Raw $p",
        b"Invoke-WebRequest http://example.invalid/",
        b"1..3 | ForEach-Object { $PSItem }",
    ],
)
def test_checker_catches_each_forbidden_construct(snippet: bytes) -> None:
    assert problems(snippet), f"checker missed {snippet!r}"


def test_checker_accepts_powershell_2_idioms() -> None:
    ok = (
        b"$m = New-Object System.Collections.Specialized.OrderedDictionary\n"
        b"$m['a'] = [Convert]::ToBase64String([byte[]](1,2))\n"
        b"if ($x -contains $y) { $sb = New-Object System.Text.StringBuilder }\n"
        b"Get-Content $p | ForEach-Object { $_ }\n"
    )
    assert problems(ok) == []


def test_agent_knows_exactly_the_ops_of_the_table_with_their_required_args() -> None:
    import re

    from remoting.ops import OPS

    text = AGENT_PATH.read_text(encoding="ascii")
    table = text[text.index("$opRequired = @{") : text.index("}", text.index("$opRequired = @{"))]
    required = {
        name: tuple(re.findall(r"'([a-z_0-9]+)'", args))
        for name, args in re.findall(r"'([a-z]+\.[a-z_]+)' = @\(([^)]*)\)", table)
    }
    assert required == {name: spec.required for name, spec in OPS.items()}
    dispatch = text[text.index("function Invoke-Op") : text.index("function New-LimitResult")]
    assert set(re.findall(r"^\s+'([a-z]+\.[a-z_]+)' \{", dispatch, re.M)) == set(OPS)


# ------------------------------------------------------------------- the sections only some ops use


def _defined_and_called(source: bytes) -> tuple[set[str], set[str]]:
    """(function names defined, command names called) in `source`, lower-cased."""
    defined: set[str] = set()
    called: set[str] = set()
    for n in _walk(_parser().parse(source).root_node):
        text = source[n.start_byte : n.end_byte].decode("ascii").lower()
        if n.type == "function_name":
            defined.add(text)
        elif n.type == "command_name":
            called.add(text)
    return defined, called


def _dispatch_arms(source: bytes) -> dict[str, set[str]]:
    """Invoke-Op's switch: op name -> the commands its arm calls (lower-cased)."""
    import re

    text = source.decode("ascii")
    dispatch = text[text.index("function Invoke-Op") : text.index("function New-LimitResult")]
    return {name: {c.lower() for c in re.findall(r"\b([A-Z][a-z]+-[A-Za-z]+)\b", arm)}
            for name, arm in re.findall(r"^\s+'([a-z]+\.[a-z_]+)' \{(.*)\}\s*$", dispatch, re.M)}


@pytest.mark.parametrize("op_names", [
    [],
    ["registry.values", "log.scan", "file.info", "products.list", "products.patches", "service.status",
     "wsus.find_update", "system.reboot_state"],  # what a check sends
    ["host.environment"],  # what kbfix doctor sends
    ["file.upload"],
    ["installer.run", "registry.values"],
], ids=["none", "check", "doctor", "upload", "apply"])
def test_every_op_the_cut_agent_dispatches_to_has_its_functions(op_names: list[str]) -> None:
    # The lab runs the agent's ops in Python, so a function left out of the agent sent for these
    # ops would only show on Windows: check the call graph of the text actually sent instead.
    from remoting.agent_delivery import agent_for_ops
    from remoting.ops import OPS

    source = AGENT_PATH.read_bytes()
    cut = agent_for_ops(source, op_names)
    all_defined, _ = _defined_and_called(source)
    defined, called = _defined_and_called(cut)
    missing = (called & all_defined) - defined
    arms = _dispatch_arms(source)
    assert set(arms) == set(OPS)
    for name in op_names:
        assert not (arms[name] & missing), f"{name}: the cut agent lacks {sorted(arms[name] & missing)}"
    # What is left out is called only from the dispatch arms of ops this request does not name.
    other_arms = set().union(*(calls for name, calls in arms.items() if name not in op_names))
    assert missing <= other_arms, sorted(missing - other_arms)
    assert problems(cut) == []
    if "file.upload" not in op_names and "installer.run" not in op_names:
        # A read-only request's agent carries none of the mutating ops' handlers.
        assert {"invoke-fileupload", "invoke-installerrun", "invoke-wsusworkaround", "invoke-reboot"} <= missing


def test_sections_cut_only_between_their_lines() -> None:
    from remoting.agent_delivery import agent_for_ops

    src = (b"a\n# ==== sent only with ops: host.environment\nb\n# ==== end of section\nc\n"
           b"# ==== sent only with ops: mutating\nd\n# ==== end of section\ne\n")
    assert agent_for_ops(src, ["registry.values"]) == b"a\nc\ne\n"
    # matched case-insensitively, as the agent's switch matches op names
    assert agent_for_ops(src, ["Host.Environment"]) == b"a\n# ==== sent only with ops: host.environment\nb\n# ==== end of section\nc\ne\n"
    assert b"\nd\n" in agent_for_ops(src, ["file.upload"]) and b"\nb\n" not in agent_for_ops(src, ["file.upload"])
    assert b"\nd\n" in agent_for_ops(src, ["no.such_op"])  # unknown ops count as mutating
    assert agent_for_ops(src, None) == src
    with pytest.raises(ValueError):
        agent_for_ops(b"# ==== sent only with ops: host.environment\nb\n", ["host.environment"])
