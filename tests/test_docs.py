"""The documentation a user follows: every relative link in a Markdown file resolves
(file and heading), every config key the docs name exists, and no file in the
repository refers to a file outside it."""
import os
import os.path as osp
import re

import pytest

from leclip import catalogue

REPO = catalogue.REPO
SKIP_DIRS = {".git", ".venv", "data", "output", "__pycache__", ".pytest_cache", "build", "dist"}
TEXT_EXTENSIONS = (".md", ".py", ".sh", ".yaml", ".txt", ".cfg", ".toml")
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
KEY = re.compile(r"(?<![\w.])[A-Z][A-Z0-9_]*(?:\.[A-Z][A-Z0-9_]*)+(?![\w(])")
# keys the docs name on purpose although no config has them (a typo shown as bad input)
NOT_KEYS = {"OPTIM.LRR"}


def repo_files(extensions):
    for folder, dirs, files in os.walk(REPO):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not d.endswith(".egg-info")]
        for name in files:
            if name.endswith(extensions):
                yield osp.join(folder, name)


MARKDOWN = sorted(repo_files((".md",)))


def slug(heading):
    """GitHub's anchor of a Markdown heading."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path):
    with open(path) as f:
        return {slug(line.lstrip("#")) for line in f if line.startswith("#")}


def test_the_docs_exist():
    names = {osp.relpath(p, REPO) for p in MARKDOWN}
    assert {"README.md", "DATASETS.md", "docs/METHODS.md", "docs/PROTOCOLS.md", "docs/DROP_IN.md",
            "docs/INTERNALS.md", "docs/ERRORS.md"} <= names


@pytest.mark.parametrize("path", MARKDOWN, ids=lambda p: osp.relpath(p, REPO))
def test_every_relative_link_resolves(path):
    with open(path) as f:
        text = f.read()
    broken = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        resolved = osp.normpath(osp.join(osp.dirname(path), file_part)) if file_part else path
        if not osp.exists(resolved) or not resolved.startswith(REPO + os.sep):
            broken.append(f"{target} (no {resolved})")
        elif anchor and resolved.endswith(".md") and anchor not in anchors(resolved):
            broken.append(f"{target} (no heading #{anchor} in {osp.relpath(resolved, REPO)})")
    assert not broken, f"{osp.relpath(path, REPO)}: " + "; ".join(broken)


def config_has(cfg, dotted):
    node = cfg
    for part in dotted.split("."):
        if not hasattr(node, "keys") or part not in node:
            return False
        node = node[part]
    return True


@pytest.mark.parametrize("path", MARKDOWN, ids=lambda p: osp.relpath(p, REPO))
def test_every_config_key_the_docs_name_exists(path):
    import leclip.datasets  # noqa: F401  their keys
    import leclip.trainers  # noqa: F401
    from leclip.dassl import get_cfg_default

    cfg = get_cfg_default()
    with open(path) as f:
        named = set(KEY.findall(f.read())) - NOT_KEYS
    missing = sorted(key for key in named if not config_has(cfg, key))
    assert not missing, f"{osp.relpath(path, REPO)} names config keys that do not exist: {missing}"


def test_no_file_refers_outside_the_repository():
    outside = [".." + "/shared", "shared" + "/spec", "/" + "work/", "/" + "tmp/"]
    found = []
    for path in repo_files(TEXT_EXTENSIONS):
        with open(path, errors="replace") as f:
            text = f.read()
        found += [f"{osp.relpath(path, REPO)}: {s}" for s in outside if s in text]
    assert not found, found


def test_every_markdown_file_a_file_names_is_in_the_repository():
    """A mention such as `docs/METHODS.md` or `DATASETS.md` names a file a user has."""
    known = {osp.relpath(p, REPO) for p in MARKDOWN}
    known |= {osp.basename(p) for p in MARKDOWN}
    found = []
    for path in repo_files(TEXT_EXTENSIONS):
        with open(path, errors="replace") as f:
            for name in set(re.findall(r"[\w./-]*\b[A-Z][A-Z_]*\.md\b", f.read())):
                if name.lstrip("./") not in known and osp.basename(name) not in known:
                    found.append(f"{osp.relpath(path, REPO)}: {name}")
    assert not found, found
