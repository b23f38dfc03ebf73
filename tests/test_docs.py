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
TOP_ONLY = {"data", "output"}
TEXT_EXTENSIONS = (".md", ".py", ".sh", ".yaml", ".txt", ".cfg", ".toml")
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
KEY = re.compile(r"(?<![\w.])[A-Z][A-Z0-9_]*(?:\.[A-Z][A-Z0-9_]*)+(?![\w(])")
# keys the docs name on purpose although no config has them (a typo shown as bad input)
NOT_KEYS = {"OPTIM.LRR"}


def repo_files(extensions):
    for folder, dirs, files in os.walk(REPO):
        top = folder == REPO  # ./data and ./output are a user's; leclip/data is code
        dirs[:] = [d for d in dirs if not (d in SKIP_DIRS and (top or d not in TOP_ONLY)) and not d.endswith(".egg-info")]
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


# ------------------------------------------------------------------ quoted paths and messages
USER_DOCS = [p for p in MARKDOWN if osp.relpath(p, REPO) in ("README.md", "DATASETS.md") or
             osp.relpath(p, REPO).startswith("docs" + os.sep)]
TOP_FOLDERS = ("leclip", "configs", "scripts", "tests", "trainers", "datasets", "docs", "benchmarks")
QUOTED = re.compile(r"`([^`\s]+)`")


def as_glob(quoted):
    """A quoted repository path as a glob: `<x>` placeholders and `{a,b}` alternatives become `*`."""
    return re.sub(r"<[^>]*>|\{[^}]*\}", "*", quoted.rstrip("/"))


def quoted_repo_paths(path):
    with open(path) as f:
        for quoted in QUOTED.findall(f.read()):
            if quoted.split("/")[0] in TOP_FOLDERS and "/" in quoted:
                yield quoted


@pytest.mark.parametrize("path", USER_DOCS, ids=lambda p: osp.relpath(p, REPO))
def test_every_repository_path_the_docs_quote_exists(path):
    missing = [q for q in quoted_repo_paths(path) if not glob_matches(q)]
    assert not missing, f"{osp.relpath(path, REPO)} quotes paths that are not in the repository: {missing}"


def test_a_quoted_path_that_does_not_exist_is_caught():
    assert glob_matches("leclip/data/splits.py") and not glob_matches("leclip/splits.py")
    assert glob_matches("configs/trainers/<Trainer>/synth.yaml")
    assert glob_matches("tests/test_docs.py::test_the_docs_exist")
    assert not glob_matches("tests/test_docs.py::test_that_was_renamed")


def glob_matches(quoted):
    """A quoted path exists; `tests/x.py::test_y` also needs the test function in that file."""
    import glob

    quoted, _, test_name = quoted.partition("::")
    found = glob.glob(osp.join(REPO, as_glob(quoted)))
    if not test_name or not found:
        return bool(found)
    with open(found[0]) as f:
        return re.search(rf"^def {re.escape(test_name)}\(", f.read(), re.M) is not None


ERRORS_DOC = osp.join(REPO, "docs", "ERRORS.md")
CODE_FOLDERS = ("leclip", "trainers", "datasets", "scripts")


def words(text):
    return re.findall(r"[a-z]+", text.lower())


def four_grams(text):
    w = words(text)
    return {tuple(w[i:i + 4]) for i in range(len(w) - 3)}


def code_four_grams():
    """The 4-word runs of every string literal in the code (an f-string's literal parts each alone)."""
    import ast

    grams = set()
    paths = [osp.join(REPO, "train.py")] + [p for p in repo_files((".py",))
                                             if osp.relpath(p, REPO).split(os.sep)[0] in CODE_FOLDERS]
    for path in paths:
        with open(path) as f:
            tree = ast.parse(f.read())
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                grams |= four_grams(node.value)
    return grams


def errors_table_rows():
    with open(ERRORS_DOC) as f:
        for line in f:
            cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
            if line.startswith("| ") and len(cells) >= 3 and not set(cells[0]) <= set("-") and cells[0] != "input":
                yield cells


def test_every_example_message_is_one_the_code_can_print():
    """Each quoted message of ERRORS.md shares a run of four words with a string in the code,
    so a message that was reworded or removed in the code cannot stay in the docs."""
    grams = code_four_grams()
    stale = [quoted for cells in errors_table_rows() for quoted in re.findall(r"`([^`]+)`", cells[1])
             if len(words(quoted)) >= 6 and not four_grams(quoted) & grams]
    assert not stale, f"docs/ERRORS.md quotes messages the code does not print: {stale}"


def test_every_test_errors_md_names_exists():
    defined = set()
    for path in repo_files((".py",)):
        if osp.relpath(path, REPO).startswith("tests" + os.sep):
            with open(path) as f:
                defined |= set(re.findall(r"^def (test_\w+)\(", f.read(), re.M))
    named = {name for cells in errors_table_rows() for name in re.findall(r"`(test_\w+)`", cells[2])}
    assert named, "no test names found in docs/ERRORS.md's tables"
    assert not named - defined, f"docs/ERRORS.md names tests that do not exist: {sorted(named - defined)}"


COMMAND = re.compile(r"bash scripts/(run|compare|ablate)\.sh([^`\n#)]*)")
PLACEHOLDER = re.compile(r"^[A-Z][A-Z_]+$|\.\.\.|^\[|^<|\|")


def joined_inline_code(text):
    """The text with each inline `code` span on one line (prose wraps them); fenced blocks kept."""
    parts = re.split(r"(```.*?```)", text, flags=re.S)
    return "".join(part if part.startswith("```") else
                   re.sub(r"`[^`]+`", lambda m: m.group(0).replace("\n", " "), part) for part in parts)


def quoted_commands():
    """(doc, script, args) of every concrete `bash scripts/{run,compare,ablate}.sh ...` in the
    user docs; a template with placeholders (METHOD, DATASET, ...) is not a command to run.
    INTERNALS.md's commands name the toy method its walk-through writes."""
    for path in USER_DOCS:
        if osp.basename(path) == "INTERNALS.md":
            continue
        with open(path) as f:
            for script, rest in COMMAND.findall(joined_inline_code(f.read())):
                args = rest.split()
                given = args[: args.index("--")] if "--" in args else args
                if given and not any(PLACEHOLDER.search(a) for a in given) and not (script == "compare" and given[0] in "ABC"):
                    yield osp.relpath(path, REPO), script, given


def check_command(script, args):
    """Raise what the harness would raise for these arguments (nothing is run)."""
    from leclip import catalogue, harness

    positional = [a for a in args if not a.startswith("--")]
    flags = [a for a in args if a.startswith("--")]
    if script == "compare":
        dataset, setting, methods = positional[0], positional[1], positional[2:]
        assert set(flags) <= {"--plot", "--papers"}, flags
    else:
        parsed = harness._parser().parse_args([script] + args)
        dataset, setting = parsed.dataset, parsed.setting
        methods = [parsed.method] if script == "run" else []
    catalogue.setting_opts(dataset, setting)
    for method in methods:
        catalogue.check_serves(method, dataset, setting)


def test_every_command_the_docs_quote_is_one_the_harness_takes():
    commands = list(quoted_commands())
    assert len(commands) >= 10, commands
    refused = []
    for doc, script, args in commands:
        try:
            check_command(script, args)
        except (ValueError, SystemExit) as err:
            refused.append(f"{doc}: scripts/{script}.sh {' '.join(args)} ({err})")
    assert not refused, refused


@pytest.mark.parametrize("script, args", [("run", ["coop", "synth_ml", "0.1"]), ("run", ["cfsg", "aircraft", "x"]),
                                          ("compare", ["synth_fg", "5", "nomethod"]), ("ablate", ["synth_ml", "2"])])
def test_a_command_the_harness_refuses_is_caught(script, args):
    with pytest.raises((ValueError, SystemExit)):
        check_command(script, args)
