"""`{{ }}` in inventory values: rendered as Ansible would, or refused with the variable named."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inventory import InventoryError, load_inventory
from inventory.templating import Renderer, TemplateProblem
from remoting.endpoint import Secret


def _render(value: object, **variables: object) -> object:
    return Renderer(variables, {"inventory_hostname": "wsus01.corp.example",
                                "inventory_hostname_short": "wsus01", "group_names": ["wsus"]}).render(value)


@pytest.mark.parametrize("template,expected", [
    ("{{ dom }}\\{{ user }}", "CORP\\svc"),
    ("{{ missing | default('fallback') }}", "fallback"),
    ("{{ missing | d('x') }}", "x"),
    ("{{ dom | lower }}", "corp"),
    ("{{ user | upper }}", "SVC"),
    ("{{ fqdn | replace('.corp.example', '') }}", "wsus01"),
    ("{{ fqdn | regex_replace('^([^.]+)\\\\..*$', '\\\\1') }}", "wsus01"),
    ("{{ 'yes' | bool | ternary('https', 'http') }}", "https"),
    ("{{ inventory_hostname_short }}-{{ group_names | join(',') }}", "wsus01-wsus"),
    ("{{ chain }}", "CORP"),
    ("plain text", "plain text"),
])
def test_renders_like_ansible(template: str, expected: str) -> None:
    assert _render(template, dom="CORP", user="svc", fqdn="wsus01.corp.example", chain="{{ dom }}") == expected


def test_a_value_from_a_secret_stays_secret() -> None:
    out = _render("{{ vault_pw }}", vault_pw=Secret("p@ss"))
    assert isinstance(out, Secret) and out.reveal() == "p@ss"
    out = _render("{{ vault_pw | upper }}!", vault_pw=Secret("p@ss"))
    assert isinstance(out, Secret) and out.reveal() == "P@SS!"


@pytest.mark.parametrize("template,variable", [
    ("{{ nope }}", "nope"),
    ("{{ a }}", "b"),  # undefined one reference away
    ("{{ lookup('env', 'X') }}", "lookup"),
    ("{{ loop1 }}", "loop1"),
])
def test_problems_name_the_variable(template: str, variable: str) -> None:
    with pytest.raises(TemplateProblem) as err:
        _render(template, a="{{ b }}", loop1="{{ loop2 }}", loop2="{{ loop1 }}")
    assert err.value.variable == variable


def test_leftover_template_is_refused() -> None:
    with pytest.raises(TemplateProblem, match="still holds"):
        _render("{{ '{{' }} x }}")
    with pytest.raises(TemplateProblem, match="syntax"):
        _render("{{ x ")


def test_sandbox_blocks_attribute_escapes() -> None:
    with pytest.raises(TemplateProblem):
        _render("{{ ''.__class__.__mro__[1].__subclasses__() }}")


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=60))
def test_any_text_renders_or_is_a_template_problem(text: str) -> None:
    try:
        out = _render(text, x="1")
    except TemplateProblem:
        return
    assert isinstance(out, str)
    assert "{{" not in out and "{%" not in out


def test_templated_connection_settings_reach_the_endpoint(tmp_path: Path) -> None:
    path = tmp_path / "hosts"
    path.write_text(
        "[wsus]\nwsus01.corp.example\n\n[wsus:vars]\nansible_connection=winrm\nwin_domain=CORP\n"
        "ansible_host=\"{{ inventory_hostname | replace('.corp.example', '.mgmt.example') }}\"\n"
        "ansible_user=\"{{ win_domain }}\\\\svc\"\nansible_port=\"{{ 5985 }}\"\n"
        "ansible_password=\"{{ win_pw | default('x') }}\"\n", encoding="utf-8")
    host = load_inventory(path, env={}).hosts["wsus01.corp.example"]
    assert host.endpoint is not None
    assert host.endpoint.address == "wsus01.mgmt.example"
    assert host.endpoint.username == "CORP\\svc" and host.endpoint.port == 5985
    assert host.endpoint.password == Secret("x")


def test_undefined_in_a_setting_stops_loading_with_file_line_variable(tmp_path: Path) -> None:
    path = tmp_path / "hosts"
    path.write_text("[wsus]\nwsus01 ansible_connection=winrm ansible_user='{{ svc_user }}'\n", encoding="utf-8")
    with pytest.raises(InventoryError) as err:
        load_inventory(path, env={}, require_credentials=False)
    assert err.value.file == path and err.value.line == 2 and err.value.field == "ansible_user"
    assert "undefined variable 'svc_user'" in err.value.message


def test_unsafe_values_are_taken_literally_and_secret_syntax_errors_are_withheld(tmp_path: Path) -> None:
    path = tmp_path / "inv.yml"
    path.write_text("win:\n  hosts:\n    h1:\n  vars:\n    ansible_connection: winrm\n    ansible_user: u\n"
                    "    ansible_password: !unsafe 'p{{ass{%word'\n", encoding="utf-8")
    ep = load_inventory(path, env={}).hosts["h1"].endpoint
    assert ep is not None and ep.password == Secret("p{{ass{%word")
    path.write_text("win:\n  hosts:\n    h1:\n  vars:\n    ansible_connection: winrm\n    ansible_user: u\n"
                    "    ansible_password: 'Tr0ub{{4dor'\n", encoding="utf-8")
    with pytest.raises(InventoryError) as err:
        load_inventory(path, env={})
    assert "details withheld" in err.value.message and "4dor" not in str(err.value)


def test_roles_may_be_templated(tmp_path: Path) -> None:
    path = tmp_path / "hosts"
    path.write_text("[wsus]\nw1\n[wsus:vars]\nansible_connection=winrm\nkind=wsus\n"
                    "kbfix_roles=\"{{ kind }}_server\"\n", encoding="utf-8")
    assert load_inventory(path, env={}, require_credentials=False).hosts["w1"].roles == ("wsus_server",)
    path.write_text("[wsus]\nw1\n[wsus:vars]\nansible_connection=winrm\nkbfix_roles=\"{{ kind }}_server\"\n",
                    encoding="utf-8")
    with pytest.raises(InventoryError, match="undefined variable 'kind'"):
        load_inventory(path, env={}, require_credentials=False)
