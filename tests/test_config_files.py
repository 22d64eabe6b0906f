"""`kmc profile add/remove/show` on the config files people really have (issue 18): symbolic links into a
dotfiles repository, read-only files, directories that cannot be written, dotted keys and inline tables,
relative paths; and what `profile show` and `profile remove` tell the user. Everything through the CLI.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tests.helpers import kmc

PASSWORD = "pw-never-shown-18"


def one_error(result) -> str:  # noqa: ANN001 - tests.helpers.Result
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("kmc: error: "), result.stderr
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    return result.stderr


@pytest.fixture(autouse=True)
def no_sandboxes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The session's sandboxes (src, dst, ...) are profiles too: these tests list only their own file's."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))


# --- symbolic links and file modes -------------------------------------------------------------------------


@pytest.fixture
def linked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """~/.config/kmc/config.toml as a relative symbolic link into a dotfiles repository (mode 0640)."""
    real = tmp_path / "dotfiles" / "kmc" / "config.toml"
    real.parent.mkdir(parents=True)
    real.write_text('# mine\n[clusters.a]\nbootstrap = ["h:1"]\n')
    real.chmod(0o640)
    link = tmp_path / "xdg" / "kmc" / "config.toml"
    link.parent.mkdir(parents=True)
    link.symlink_to(os.path.relpath(real, link.parent))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("KMC_CONFIG", raising=False)
    return link, real


def test_add_and_remove_edit_the_target_of_a_symbolic_link(linked: tuple[Path, Path]) -> None:
    link, real = linked
    kmc("profile", "add", "b", "--bootstrap", "h:2")
    assert link.is_symlink() and link.resolve() == real.resolve()
    assert real.read_text() == '# mine\n[clusters.a]\nbootstrap = ["h:1"]\n\n[clusters.b]\nbootstrap = ["h:2"]\n'
    assert stat.S_IMODE(real.stat().st_mode) == 0o640
    kmc("profile", "remove", "a")
    assert link.is_symlink() and real.read_text() == '# mine\n\n[clusters.b]\nbootstrap = ["h:2"]\n'
    assert stat.S_IMODE(real.stat().st_mode) == 0o640
    assert sorted(p.name for p in real.parent.iterdir()) == ["config.toml"]  # no temporary left
    assert [row["name"] for row in kmc("profile", "list", "-o", "json").json()] == ["b"]


@pytest.mark.parametrize("command", [["add", "c", "--bootstrap", "h:3"], ["remove", "a"],
                                     ["add", "a", "--bootstrap", "h:3", "--force"]])
def test_a_read_only_config_is_refused_not_rewritten(linked: tuple[Path, Path], command: list[str]) -> None:
    link, real = linked
    real.chmod(0o444)
    before = real.read_bytes()
    message = one_error(kmc("profile", *command, expect=3))
    assert f"{link} is read-only (mode 0444)" in message and "chmod u+w" in message
    assert real.read_bytes() == before and link.is_symlink()


def test_a_config_directory_that_cannot_be_created_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    message = one_error(kmc("--config", str(blocker / "kmc" / "config.toml"), "profile", "add", "a",
                            "--bootstrap", "h:1", expect=3))
    assert "cannot create the directory of" in message and "Not a directory" in message


def test_a_config_that_cannot_be_read_is_a_clear_error(tmp_path: Path) -> None:
    directory = tmp_path / "config.toml"
    directory.mkdir()  # a directory where the file should be
    message = one_error(kmc("--config", str(directory), "profile", "add", "a", "--bootstrap", "h:1", expect=3))
    assert str(directory) in message and "cannot read" in message


# --- layouts: dotted keys and inline tables -----------------------------------------------------------------

# Every way TOML can define a cluster, in two files (top-level dotted keys and a [clusters] table cannot
# share one).
TOP_LEVEL = """\
# top comment
clusters.dotted.bootstrap = ["h:1"]
clusters.dotted.client.request_timeout_ms = 5000
clusters.inline = { bootstrap = ["h:2"] }   # inline table

[clusters."quoted"]
bootstrap = [
  "h:5",   # a multi-line array
  "h:6",
]
[clusters.quoted.client]
request_timeout_ms = 1000
# flows below
[flows.f]
from = "dotted"
to = "quoted"
"""
UNDER_A_TABLE = """\
# top comment
[clusters]
under.bootstrap = ["h:3"]
under.client.request_timeout_ms = 5000
braces = { bootstrap = "h:4" }
[clusters.table]
bootstrap = "h:7"
# flows below
[flows.f]
from = "under"
to = "braces"
"""
LAYOUTS = {"dotted": TOP_LEVEL, "inline": TOP_LEVEL, "quoted": TOP_LEVEL, "under": UNDER_A_TABLE,
           "braces": UNDER_A_TABLE, "table": UNDER_A_TABLE}


def use_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    monkeypatch.setenv("KMC_CONFIG", str(path))
    return path


def names() -> list[str]:
    return sorted(row["name"] for row in kmc("profile", "list", "-o", "json").json())


def in_file(text: str) -> list[str]:
    return sorted(name for name, layout in LAYOUTS.items() if layout == text)


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_remove_finds_every_layout_and_keeps_the_rest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      name: str) -> None:
    path = use_config(tmp_path, monkeypatch, LAYOUTS[name])
    assert name in names()
    kmc("profile", "remove", name)
    assert names() == [other for other in in_file(LAYOUTS[name]) if other != name]
    text = path.read_text()
    assert text.startswith("# top comment\n") and "# flows below\n[flows.f]\n" in text
    kmc("profile", "remove", name, expect=2)


@pytest.mark.parametrize("text", [TOP_LEVEL, UNDER_A_TABLE])
def test_remove_every_layout_one_after_the_other(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    path = use_config(tmp_path, monkeypatch, text)
    for name in in_file(text):
        kmc("profile", "remove", name, "-q")
    assert names() == []
    assert path.read_text().startswith("# top comment\n")
    assert path.read_text().endswith("# flows below\n[flows.f]\n" + text.split("[flows.f]\n")[1])


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_add_force_replaces_every_layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    use_config(tmp_path, monkeypatch, LAYOUTS[name])
    kmc("profile", "add", name, "--bootstrap", "new:1", "--force")
    assert kmc("profile", "show", name, "-o", "json").json()["bootstrap"] == ["new:1"]
    assert names() == in_file(LAYOUTS[name])


def test_one_inline_table_for_every_cluster_is_refused_clearly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = use_config(tmp_path, monkeypatch, 'clusters = { a = { bootstrap = "h:1" }, b = { bootstrap = "h:2" } }\n')
    before = path.read_bytes()
    assert "edit the file by hand" in one_error(kmc("profile", "remove", "b", expect=3))
    assert "edit the file by hand" in one_error(kmc("profile", "add", "c", "--bootstrap", "h:3", expect=3))
    assert path.read_bytes() == before


# --- what profile add stores, show shows and remove says ------------------------------------------------------


def test_relative_paths_are_stored_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "etc" / "config.toml"
    workdir = tmp_path / "work"
    workdir.mkdir()
    (workdir / "pw").write_text(PASSWORD)
    (workdir / "pw").chmod(0o600)
    monkeypatch.chdir(workdir)
    kmc("--config", str(config), "profile", "add", "s", "--bootstrap", "h:1", "--security-protocol", "SASL_SSL",
        "--username", "u", "--password-file", "pw", "--ssl-cafile", "ca.pem")
    assert f'password_file = "{workdir / "pw"}"' in config.read_text()
    assert f'ssl_cafile = "{workdir / "ca.pem"}"' in config.read_text()
    monkeypatch.chdir(tmp_path)  # another directory: the file is still found
    shown = kmc("--config", str(config), "profile", "show", "s", "-o", "json").json()
    assert shown["password_file"] == str(workdir / "pw") and "unresolved" not in shown


def test_relative_paths_in_the_file_are_relative_to_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "etc" / "config.toml"
    config.parent.mkdir()
    config.write_text('[clusters.s]\nbootstrap = "h:1"\nsecurity_protocol = "SASL_SSL"\nusername = "u"\n'
                      'password_file = "secrets/pw"\nssl_cafile = "ca.pem"\n')
    (config.parent / "secrets").mkdir()
    (config.parent / "secrets" / "pw").write_text(PASSWORD)
    (config.parent / "secrets" / "pw").chmod(0o600)
    monkeypatch.chdir(tmp_path)
    shown = kmc("--config", str(config), "profile", "show", "s", "-o", "json").json()
    assert shown["password_file"] == str(config.parent / "secrets" / "pw")
    assert shown["ssl_cafile"] == str(config.parent / "ca.pem")


def test_show_masks_the_password_but_not_the_path_of_its_file(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text(PASSWORD)
    secret.chmod(0o600)
    config = tmp_path / "config.toml"
    kmc("--config", str(config), "profile", "add", "s", "--bootstrap", "h:1", "--security-protocol", "SASL_SSL",
        "--username", "u", "--password-file", str(secret))
    for fmt in ("json", "table"):
        result = kmc("--config", str(config), "profile", "show", "s", "-o", fmt)
        assert str(secret) in result.stdout and PASSWORD not in result.stdout
    assert kmc("--config", str(config), "profile", "show", "s", "-o", "json").json()["password"] == "***"
    secret.unlink()  # unresolved now: shown as written, the path still visible
    shown = kmc("--config", str(config), "profile", "show", "s", "-o", "json").json()
    assert shown["password_file"] == str(secret) and "cannot read" in shown["unresolved"]


def test_remove_warns_about_flows_that_use_the_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    layouts = use_config(tmp_path, monkeypatch, UNDER_A_TABLE)
    result = kmc("profile", "remove", "under")
    assert result.stderr.splitlines() == [
        f"removed cluster 'under' from {layouts}",
        f"kmc: warning: cluster 'under' is still named by flows: f (they fail until the cluster is added again "
        f"or they are edited in {layouts})"]
    assert "warning" not in kmc("profile", "remove", "table").stderr


def test_remove_of_an_unknown_name_says_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    use_config(tmp_path, monkeypatch, UNDER_A_TABLE)
    message = one_error(kmc("profile", "remove", "nope", expect=2))
    assert "cluster 'nope' is not in" in message and "kmc profile list" in message
    assert "--bootstrap" not in message  # remove has no such option


def test_remove_of_a_sandbox_points_at_sandbox_down(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    use_config(tmp_path, monkeypatch, UNDER_A_TABLE)
    fake_sandbox(tmp_path / "data", "src", 1)
    message = one_error(kmc("profile", "remove", "src", expect=2))
    assert "'src' is a sandbox" in message and "kmc sandbox down src" in message


# --- sandbox seed writes only into sandboxes --------------------------------------------------------------


def fake_sandbox(data_home: Path, name: str, port: int) -> None:
    """The state file of a sandbox (no process behind it): enough for kmc to know the name and address."""
    import json

    directory = data_home / "kmc" / "sandbox" / name
    directory.mkdir(parents=True)
    (directory / "sandbox.json").write_text(json.dumps({
        "name": name, "bootstrap": [f"127.0.0.1:{port}"], "kafka_cluster_id": "x",
        "brokers": [{"node_id": 1, "port": port, "controller_port": port + 1, "pid": None, "log_dir": "d",
                     "log_file": "f"}]}))


def test_seed_refuses_a_cluster_that_is_not_a_sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.test_exit_codes import closed_port

    port = closed_port()
    use_config(tmp_path, monkeypatch, f'[clusters.prod]\nbootstrap = ["127.0.0.1:{port}"]\n')
    for target in ("prod", f"127.0.0.1:{port}"):
        message = one_error(kmc("sandbox", "seed", target, expect=2))
        assert f"'{target}' is not a sandbox" in message and "--force" in message
    # --force goes ahead (and finds nothing listening)
    assert "cannot reach" in one_error(kmc("sandbox", "seed", "prod", "--force", "--timeout", "1", expect=4))
    # a sandbox, by name, by address, or by a profile of another name for it, is seeded without --force
    fake_sandbox(tmp_path / "data", "play", port)
    for target in ("play", f"127.0.0.1:{port}", "prod"):
        assert "cannot reach" in one_error(kmc("sandbox", "seed", target, "--timeout", "1", expect=4))
