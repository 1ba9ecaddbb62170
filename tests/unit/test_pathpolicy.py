"""The path policy against a corpus of hostile paths, built from real files and symlinks in a temp dir."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from mcp_bridge.pathpolicy import PathPolicy, PathRefused, RootError
from mcp_bridge.protected import Guard, Protected, Protection
from mcp_bridge.tools.base import ToolFailure

pytestmark = pytest.mark.skipif(os.name == "nt", reason="the corpus uses POSIX symlinks and paths")


@dataclass(frozen=True)
class Tree:
    base: Path
    root: Path
    outside: Path

    def fill(self, template: str) -> str:
        return template.format(base=self.base, root=self.root, outside=self.outside)


@pytest.fixture
def tree(tmp_path: Path) -> Tree:
    base = tmp_path.resolve()
    root, outside = base / "root", base / "outside"
    (root / "sub" / "deeper").mkdir(parents=True)
    outside.mkdir()
    (base / "root2").mkdir()
    (base / "rootx").mkdir()
    (root / "file.txt").write_text("inside\n")
    (root / "sub" / "inner.txt").write_text("inner\n")
    (outside / "secret.txt").write_text("top secret\n")
    (base / "root2" / "secret.txt").write_text("sibling secret\n")
    links = {
        "link_in": "file.txt",
        "link_out_file": "../outside/secret.txt",
        "link_out_dir": "../outside",
        "link_abs_out": str(outside),
        "dangling_out": "../outside/missing.txt",
        "dangling_out_dir": "../outside/newdir",
        "dangling_in": "newtarget.txt",
        "loop_a": "loop_b",
        "loop_b": "loop_a",
        "self_loop": "self_loop",
        "chain1": "chain2",
        "chain2": "chain3",
        "chain3": "../outside",
        "link_sibling": "../root2",
        "sub/up": "..",
        "sub/up2": "../..",
        "sub/deeper/far_out": "../../../outside/secret.txt",
    }
    for name, target in links.items():
        (root / name).symlink_to(target)
    return Tree(base, root, outside)


# Every one of these must be refused, whether the caller wants an existing path (read) or not (write).
HOSTILE = [
    "../outside/secret.txt",
    "../../etc/passwd",
    "/etc/passwd",
    "/",
    "..",
    "./..",
    "sub/../..",
    "{outside}/secret.txt",
    "{outside}",
    "{base}",
    "{base}/root2/secret.txt",  # sibling-prefix: /x/root2 is not inside /x/root
    "{root}2/secret.txt",
    "{root}2",
    "{root}x",
    "../root2/secret.txt",
    "../rootx",
    "{root}/../outside/secret.txt",
    "{root}//..//outside/secret.txt",
    "{root}/sub/../../outside",
    "sub/../../outside/secret.txt",
    "sub/./../../outside/secret.txt",
    "sub/deeper/../../../outside/secret.txt",
    "sub/../../etc",
    "file.txt/../../outside/secret.txt",
    "//etc/passwd",
    "link_out_file",
    "link_out_dir",
    "link_out_dir/",
    "link_out_dir/secret.txt",
    "link_out_dir/new.txt",
    "link_abs_out",
    "link_abs_out/secret.txt",
    "chain1",
    "chain1/secret.txt",
    "link_sibling/secret.txt",
    "sub/up2",
    "sub/up2/outside/secret.txt",
    "sub/up/../outside/secret.txt",
    "sub/deeper/far_out",
    "dangling_out",
    "dangling_out_dir/new.txt",
    "loop_a",
    "loop_a/x",
    "self_loop",
    "file.txt\0",
    "\0",
    "sub/\0/x",
    "",
    "~",
    "~/secret.txt",
    "newdir/../../outside/x",
    "newdir/../file.txt",  # inside, but '..' out of a directory that does not exist is never real
    "a/b/c/../../../../outside/secret.txt",
]


def test_the_corpus_is_large_enough() -> None:
    assert len(HOSTILE) >= 40


@pytest.mark.parametrize("must_exist", [True, False], ids=["read", "write"])
@pytest.mark.parametrize("template", HOSTILE)
def test_hostile_paths_are_refused(tree: Tree, template: str, must_exist: bool) -> None:
    policy = PathPolicy([tree.root])
    with pytest.raises(PathRefused) as refused:
        policy.resolve(tree.fill(template), must_exist=must_exist)
    message = str(refused.value)
    assert message.startswith("refused ")
    assert "secret" not in message.replace("secret.txt", "")  # names, never content
    assert "top secret" not in message


@pytest.mark.parametrize(("template", "expected"), [
    ("file.txt", "file.txt"),
    ("{root}/file.txt", "file.txt"),
    ("./file.txt", "file.txt"),
    ("sub//inner.txt", "sub/inner.txt"),
    ("sub/../file.txt", "file.txt"),
    ("sub/", "sub"),
    ("sub/inner.txt/", "sub/inner.txt"),
    (".", ""),
    ("{root}", ""),
    ("{root}/", ""),
    ("link_in", "file.txt"),
    ("sub/up/file.txt", "file.txt"),
    ("sub/up", ""),
    ("link_out_dir/../root/file.txt", "file.txt"),  # POSIX resolves the symlink first: that is inside
])
def test_existing_paths_inside_resolve_to_their_real_path(tree: Tree, template: str, expected: str) -> None:
    policy = PathPolicy([tree.root])
    real = policy.resolve(tree.fill(template), must_exist=True)
    assert real == (tree.root / expected if expected else tree.root)


@pytest.mark.parametrize(("template", "expected"), [
    ("new.txt", "new.txt"),
    ("newdir/sub/new.txt", "newdir/sub/new.txt"),
    ("dangling_in", "newtarget.txt"),  # a dangling link inside: the write lands on its target
    ("~name", "~name"),  # only a bare ~ is refused; this is an ordinary name
    ("ｆile.txt", "ｆile.txt"),  # a look-alike is just another name inside the root
    ("‥/outside", "‥/outside"),  # U+2025 is not '..'
    ("%2e%2e/outside", "%2e%2e/outside"),  # nothing is URL-decoded
    ("sub/deeper/new.txt", "sub/deeper/new.txt"),
])
def test_new_paths_inside_are_allowed_for_writing(tree: Tree, template: str, expected: str) -> None:
    policy = PathPolicy([tree.root])
    assert policy.resolve(tree.fill(template), must_exist=False) == tree.root / expected


def test_missing_path_is_a_failure_but_not_a_refusal(tree: Tree) -> None:
    policy = PathPolicy([tree.root])
    with pytest.raises(ToolFailure) as failure:
        policy.resolve("nope.txt", must_exist=True)
    assert not isinstance(failure.value, PathRefused)
    assert "does not exist" in str(failure.value) and "list_directory" in str(failure.value)


def test_a_file_used_as_a_directory_is_explained(tree: Tree) -> None:
    with pytest.raises(ToolFailure, match="is a file, not a directory"):
        PathPolicy([tree.root]).resolve("file.txt/x", must_exist=False)


def test_refusals_say_why_and_what_is_allowed(tree: Tree) -> None:
    policy = PathPolicy([tree.root])
    with pytest.raises(PathRefused) as through_link:
        policy.resolve("link_out_file", must_exist=True)
    assert "through a symlink" in str(through_link.value) and str(tree.root) in str(through_link.value)
    with pytest.raises(PathRefused) as plain:
        policy.resolve("/etc/passwd", must_exist=True)
    # A path that was outside from the start gets no report of where symlinks out there lead.
    assert "symlink" not in str(plain.value) and str(tree.root) in str(plain.value)
    with pytest.raises(PathRefused, match="symlink loop"):
        policy.resolve("loop_a", must_exist=False)
    with pytest.raises(PathRefused, match="NUL"):
        policy.resolve("a\0b", must_exist=False)
    with pytest.raises(PathRefused, match="'~' is not expanded"):
        policy.resolve("~/x", must_exist=False)
    with pytest.raises(PathRefused, match=r"use '\.'"):
        policy.resolve("", must_exist=True)


def test_relative_paths_use_the_first_root_and_absolute_ones_any_root(tree: Tree) -> None:
    other = tree.base / "root2"
    policy = PathPolicy([tree.root, other])
    assert policy.resolve("file.txt", must_exist=True) == tree.root / "file.txt"
    assert policy.resolve(str(other / "secret.txt"), must_exist=True) == other / "secret.txt"
    with pytest.raises(ToolFailure):
        policy.resolve("secret.txt", must_exist=True)


def test_roots_are_real_paths(tree: Tree) -> None:
    alias = tree.base / "alias"
    alias.symlink_to(tree.root)
    policy = PathPolicy([alias, tree.root])
    assert policy.configured_roots == (tree.root,)  # resolved and de-duplicated
    assert policy.roots == (tree.root,)
    assert policy.resolve(str(alias / "file.txt"), must_exist=True) == tree.root / "file.txt"


def test_filesystem_root_contains_everything(tree: Tree) -> None:
    assert PathPolicy([Path("/")]).resolve(str(tree.outside / "secret.txt"), must_exist=True) == (
        tree.outside / "secret.txt")


@pytest.mark.parametrize("make", [
    lambda t: [t.base / "missing"],
    lambda t: [t.root / "file.txt"],
    lambda t: [t.root / "loop_a"],
    lambda t: [],
    lambda t: [Path(f"{t.root}\0")],
])
def test_unusable_roots_are_refused_at_start(tree: Tree, make: object) -> None:
    assert callable(make)
    with pytest.raises(RootError) as error:
        PathPolicy(make(tree))
    assert "root" in str(error.value) and ("--root" in str(error.value) or "NUL" in str(error.value))


# -- narrowing by the client's MCP roots ------------------------------------------------------------


def test_client_roots_narrow(tree: Tree) -> None:
    policy = PathPolicy([tree.root])
    policy.narrow([tree.root / "sub"])
    assert policy.roots == (tree.root / "sub",)
    assert policy.configured_roots == (tree.root,)
    assert policy.resolve("inner.txt", must_exist=True) == tree.root / "sub" / "inner.txt"
    with pytest.raises(PathRefused):
        policy.resolve(str(tree.root / "file.txt"), must_exist=True)


def test_client_roots_never_widen(tree: Tree) -> None:
    policy = PathPolicy([tree.root])
    policy.narrow([tree.base])  # contains the configured root: that root stays, nothing more
    assert policy.roots == (tree.root,)
    with pytest.raises(PathRefused):
        policy.resolve(str(tree.outside / "secret.txt"), must_exist=True)


def test_a_narrowing_client_root_beats_a_covering_one(tree: Tree) -> None:
    policy = PathPolicy([tree.root])
    policy.narrow([tree.root / "sub", tree.base])
    assert policy.roots == (tree.root / "sub",)


def test_client_roots_outside_leave_nothing_allowed(tree: Tree) -> None:
    policy = PathPolicy([tree.root])
    policy.narrow([tree.outside, tree.base / "root2"])
    assert policy.roots == ()
    with pytest.raises(PathRefused) as refused:
        policy.resolve("file.txt", must_exist=True)
    assert "no directory is allowed" in str(refused.value) and str(tree.outside) in str(refused.value)


@pytest.mark.parametrize("client", [
    lambda t: t.root / "link_out_dir",  # inside by name, outside in reality
    lambda t: t.root / "missing",
    lambda t: t.root / "file.txt",
    lambda t: Path("sub"),  # relative: means nothing to the server
    lambda t: t.base / "root2",  # sibling prefix
])
def test_unusable_client_roots_are_ignored(tree: Tree, client: object) -> None:
    assert callable(client)
    policy = PathPolicy([tree.root])
    policy.narrow([client(tree), tree.root / "sub"])
    assert policy.roots == (tree.root / "sub",)


def test_narrowing_starts_from_the_configured_roots_each_time(tree: Tree) -> None:
    policy = PathPolicy([tree.root])
    policy.narrow([tree.root / "sub"])
    policy.narrow([tree.root / "sub" / "deeper", tree.root])
    assert list(policy.roots) == [tree.root / "sub" / "deeper", tree.root]
    policy.narrow([tree.base])
    assert list(policy.roots) == [tree.root]


def test_narrowed_roots_follow_the_client_order(tree: Tree) -> None:
    other = tree.base / "root2"
    policy = PathPolicy([tree.root, other])
    policy.narrow([other, tree.root / "sub"])
    assert policy.roots == (other, tree.root / "sub")
    assert policy.resolve("secret.txt", must_exist=True) == other / "secret.txt"


def test_empty_client_list_allows_nothing(tree: Tree) -> None:
    policy = PathPolicy([tree.root])
    policy.narrow([])
    assert policy.roots == ()


# -- protected paths and the default root -------------------------------------------------------------


def _protection(*entries: Protected) -> Protection:
    return Protection(entries)


def test_protected_paths_are_refused_inside_a_named_root(tree: Tree) -> None:
    secret = tree.root / "vault"
    secret.mkdir()
    (secret / "key").write_text("k\n")
    policy = PathPolicy([tree.root], protection=_protection(Protected(secret, "it holds test keys")))
    for path, must_exist in (("vault/key", True), ("vault", True), ("vault/new.txt", False), ("vault/a/b", False)):
        with pytest.raises(PathRefused, match=r"vault is protected from reading or writing .*it holds test keys"):
            policy.resolve(path, must_exist=must_exist)
    # A symlink to it, a '..' detour, a doubled slash: judged by the real path, refused the same way.
    (tree.root / "to_vault").symlink_to("vault/key")
    for path in ("to_vault", "sub/../vault/key", "vault//key", str(secret / "key")):
        with pytest.raises(PathRefused, match="protected"):
            policy.resolve(path, must_exist=True)
    assert policy.resolve("file.txt", must_exist=True) == tree.root / "file.txt"


def test_write_only_protection_allows_reading(tree: Tree) -> None:
    rc = tree.root / ".bashrc"
    rc.write_text("alias ls=ls\n")
    policy = PathPolicy([tree.root], protection=_protection(Protected(rc, "it runs as you", Guard.WRITE)))
    assert policy.resolve(".bashrc", must_exist=True) == rc
    with pytest.raises(PathRefused, match=r"protected from writing .*it runs as you"):
        policy.resolve(".bashrc", must_exist=False)
    with pytest.raises(PathRefused, match="protected from writing"):
        policy.resolve(".bashrc", must_exist=True, writing=True)


def test_a_hard_link_to_a_protected_file_is_refused_when_opened(tree: Tree) -> None:
    secret = tree.outside / "secret.txt"
    os.link(secret, tree.root / "hard")
    policy = PathPolicy([tree.root], protection=_protection(Protected(secret, "it is secret")))
    real = policy.resolve("hard", must_exist=True)  # its path is not protected, its inode is
    with pytest.raises(PathRefused, match="it is secret"):
        policy.open(real, os.O_RDONLY, shown="hard", writing=False)


def test_the_built_in_list_covers_the_bridge_and_the_usual_secrets(tree: Tree, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tree.base / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("COMPASS_BRIDGE_HOME", str(home / ".cb"))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    policy = PathPolicy([home], protected=[home / "mine"])
    for path in (".ssh/id_ed25519", ".aws/credentials", ".docker/config.json", ".netrc", ".config/gh/hosts.yml",
                 ".gnupg/x", ".kube/config", ".config/gcloud/x", ".azure/x", ".npmrc", ".pypirc", ".git-credentials",
                 ".claude.json", ".claude/.credentials.json", ".claude/projects/p/session.jsonl",
                 ".config/chromium/Default/Cookies", ".mozilla/firefox/p/logins.json",
                 ".cb/config/config.toml", ".cb/data/key-secret", ".cb/data/bridge.sqlite3", ".cb/logs/serve.log",
                 "mine/notes.txt"):
        with pytest.raises(PathRefused, match="protected from reading or writing"):
            policy.resolve(path, must_exist=False, writing=False)
    for path in (".bashrc", ".profile", ".zshrc", ".gitconfig", ".config/autostart/x.desktop", ".local/bin/ls",
                 "project/.git/hooks/pre-commit", "project/.git/config", "project/.claude/settings.local.json",
                 "project/sub/.claude/agents/x.md", "project/.mcp.json", "project/.git/HEAD",
                 "project/.git/modules/lib/hooks/post-checkout", "project/lib/.git", "project/.cursor/mcp.json"):
        assert policy.resolve(path, must_exist=False, writing=False) == home / path
        with pytest.raises(PathRefused, match="protected from writing"):
            policy.resolve(path, must_exist=False)
    assert policy.resolve("project/main.py", must_exist=False) == home / "project" / "main.py"
    for path in ("project/.github/workflows/ci.yml", "project/.gitignore", "project/claude/x", "project/.git.md"):
        assert policy.resolve(path, must_exist=False) == home / path


@pytest.mark.parametrize("where", ["home", "above_home", "filesystem_root"])
def test_a_home_wide_default_root_is_refused_with_advice(tree: Tree, monkeypatch: pytest.MonkeyPatch,
                                                          where: str) -> None:
    home = tree.base / "users" / "me"
    home.mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    root = {"home": home, "above_home": tree.base / "users", "filesystem_root": Path("/")}[where]
    policy = PathPolicy([root], implicit=True, protection=_protection())
    assert policy.roots == () and policy.configured_roots == ()
    assert policy.notice is not None and "--root" in policy.notice and "roots = " in policy.notice
    with pytest.raises(PathRefused, match=r"no roots were named.*--root DIR"):
        policy.resolve("anything.txt", must_exist=False)
    policy.narrow([home / "x", root])  # a client's MCP roots cannot bring it back
    with pytest.raises(PathRefused, match="no roots were named"):
        policy.resolve(str(root), must_exist=True)
    # Named by the user, the same root is used.
    assert PathPolicy([root], protection=_protection()).roots == (Path(os.path.realpath(root)),)
    assert PathPolicy.chosen([root], home).roots == (Path(os.path.realpath(root)),)
    assert PathPolicy.chosen([], root).notice is not None


def test_a_project_default_root_is_used(tree: Tree, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tree.base))
    policy = PathPolicy([tree.root], implicit=True, protection=_protection())
    assert policy.notice is None and policy.roots == (tree.root,)
