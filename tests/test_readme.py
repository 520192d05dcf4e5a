"""The code of the README and of docs/*.md runs as written on a CPU-only machine.

- Every ```python block runs in a fresh interpreter (`sys.executable -c CODE`, cwd an empty temporary
  directory, OMP_NUM_THREADS=1, 300 s) and must exit with status 0: it may use only what it defines
  and files it creates, and a device the machine has.
- Every ```bash line (backslash continuations joined) that starts with `python -m vitfast.train`,
  `torchrun ... -m vitfast.train` or `python -m vitfast.eval` must parse. vitfast.train:
  vitfast.training.config.resolve(argv), run from the repository root, so every flag, key, value and
  `-c` config is checked; a `-c` file must be a packaged config, a file of the repository or one a
  README bash block writes with `cat > FILE <<'EOF'`. Data directories and weight files are the
  reader's to provide: resolve does not open them (only `--resume FILE`, which it checks, would need
  the file). vitfast.eval: build_parser().parse_args(argv), flags and their values only.
- The blocks right after <!-- main-command --> and <!-- test-command --> are not run here: CI runs
  them verbatim.

Escape hatch: the HTML comment `<!-- readme-test: skip REASON -->` on the line just before a block's
opening fence skips that block, with REASON as the skip message. Keep it for code that cannot run on a
CPU-only machine at all; a block that merely lacks its inputs should define them.

Test ids: the nearest heading above the block (as a slug) and the block's index among the README's
blocks of its language (`models-block2`); bash commands add the command's index within its block
(`training-python-m-vitfast-train-block3-cmd3`).
"""
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest

import vitfast
from tests.values import COMMAND_ENV

README = Path(__file__).resolve().parents[1] / "README.md"
DOCS = [README, *sorted((README.parent / "docs").glob("*.md"))]
SKIP = re.compile(r"<!--\s*readme-test:\s*skip\s+(.+?)\s*-->")
CI_RUNS = ("<!-- main-command -->", "<!-- test-command -->")
SEPARATORS = {"&&", "||", "|", ";"}


class Block(NamedTuple):
    lang: str
    code: str
    line: int  # of the opening fence, 1-based
    id: str
    marker: str  # the line just before the fence, stripped
    file: str = "README.md"  # relative to the clone's root


def slug(text):
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "top"


def blocks(text, file="README.md"):
    """Every fenced block of a markdown file, with the heading it sits under (ids of a docs/ page begin
    with its name)."""
    out, heading, counts = [], "top", {}
    prefix = "" if file == "README.md" else f"{Path(file).stem}-"
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
        elif line.startswith("```"):
            lang = line[3:].strip().split(" ")[0]
            end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith("```")), len(lines))
            n = counts[lang] = counts.get(lang, -1) + 1
            marker = lines[i - 1].strip() if i else ""
            out.append(Block(lang, "\n".join(lines[i + 1:end]) + "\n", i + 1, f"{prefix}{slug(heading)}-block{n}",
                             marker, file))
            i = end  # headings inside a block (shell comments) are not the README's
        i += 1
    return out


BLOCKS = [b for doc in DOCS for b in blocks(doc.read_text(encoding="utf-8"), doc.relative_to(README.parent).as_posix())]


def skip_reason(block):
    m = SKIP.fullmatch(block.marker)
    return m.group(1) if m else None


def param(block, *values, id=None):
    """One test case of `block`, skipped where its skip comment says so."""
    reason = skip_reason(block)
    return pytest.param(block, *values, id=id or block.id, marks=[pytest.mark.skip(reason=reason)] if reason else [])


def last_line(text):
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1].strip() if lines else "(no output)"


# ---- python blocks ----

@pytest.mark.parametrize("block", [param(b) for b in BLOCKS if b.lang == "python"])
def test_python_block_runs(block, tmp_path):
    # The vitfast under test: where this process imported it from (the source tree or the installed one).
    path = os.pathsep.join(filter(None, [str(Path(vitfast.__file__).parents[1]), os.environ.get("PYTHONPATH")]))
    env = {**COMMAND_ENV, "PYTHONPATH": path}
    try:
        r = subprocess.run([sys.executable, "-c", block.code], cwd=tmp_path, env=env, capture_output=True,
                           text=True, timeout=300)
    except subprocess.TimeoutExpired:
        pytest.fail(f"block {block.id} ({block.file}:{block.line}) did not finish in 300 s", pytrace=False)
    if r.returncode != 0:
        pytest.fail(f"block {block.id} ({block.file}:{block.line}) exited with status {r.returncode}: "
                    f"{last_line(r.stderr)}\n--- block ---\n{block.code}--- stderr ---\n{r.stderr[-6000:]}",
                    pytrace=False)


# ---- bash command lines ----

SHELL = ("bash", "sh", "shell")


def commands(block):
    """(README line, the command as written, the module, its argv) of each vitfast.train / vitfast.eval
    command in a bash block."""
    out, lines = [], block.code.splitlines()
    for k, first in enumerate(lines):
        if not re.match(r"\s*(python|torchrun|srun)\s", first) or (k and lines[k - 1].endswith("\\")):
            continue
        line, j = first, k
        while line.endswith("\\") and j + 1 < len(lines):  # join the backslash continuations
            j += 1
            line = line[:-1].rstrip() + " " + lines[j].strip()
        words = shlex.split(line, comments=True)
        words = words[:next((i for i, w in enumerate(words) if w in SEPARATORS), len(words))]
        if words[:1] == ["srun"]:  # SLURM's launcher, its options, then the command it starts
            words = words[next((i for i, w in enumerate(words) if w in ("python", "torchrun")), len(words)):]
        if words[:1] == ["python"] and words[1:3] in (["-m", "vitfast.train"], ["-m", "vitfast.eval"]):
            out.append((block.line + 1 + k, line.strip(), words[2], words[3:]))
        elif words[:1] == ["torchrun"] and "-m" in words and words[words.index("-m") + 1:][:1] == ["vitfast.train"]:
            out.append((block.line + 1 + k, line.strip(), "vitfast.train", words[words.index("-m") + 2:]))
    return out


def written_files(blocks):
    """{name: content} of each file a bash block writes with `cat > NAME <<'EOF' ... EOF`."""
    files = {}
    for b in blocks:
        if b.lang in SHELL:
            for m in re.finditer(r"cat\s*>\s*(\S+)\s*<<-?\s*['\"]?(\w+)['\"]?\n(.*?)\n\2$", b.code, re.S | re.M):
                files[m.group(1)] = m.group(3) + "\n"
    return files


COMMANDS = [param(b, *c, id=f"{b.id}-cmd{i}") for b in BLOCKS if b.lang in SHELL and b.marker not in CI_RUNS
            for i, c in enumerate(commands(b))]


TORCHRUN = [c for c in COMMANDS if c.values[2].startswith(("torchrun", "srun"))]


@pytest.mark.parametrize("block,at,line,module,argv", TORCHRUN)
def test_torchrun_flags_are_torchruns(block, at, line, module, argv):
    """The launcher's own flags (before `-m vitfast.train`), read by torchrun's parser."""
    from torch.distributed.run import get_args_parser

    words = shlex.split(line, comments=True)
    try:
        get_args_parser().parse_args(words[words.index("torchrun") + 1:])
    except SystemExit:  # argparse's refusal (its line is on stderr)
        pytest.fail(f"block {block.id} ({block.file}:{at}): torchrun does not take {line}", pytrace=False)


def test_the_sbatch_scripts_are_bash_that_parses(tmp_path):
    """What runs the README's SLURM example up to SLURM itself: its script is valid bash (its command line
    is checked by the two tests above), with the directives the README explains."""
    scripts = {name: text for name, text in written_files(BLOCKS).items() if name.endswith(".sbatch")}
    assert scripts, "the README's SLURM example"
    for name, text in scripts.items():
        (tmp_path / name).write_text(text)
        checked = subprocess.run(["bash", "-n", str(tmp_path / name)], capture_output=True, text=True)
        assert checked.returncode == 0, checked.stderr
        directives = re.findall(r"^#SBATCH (.*)$", text, re.M)
        assert {"--signal=USR1@180", "--requeue"} <= {d for line in directives for d in line.split()}, directives


def test_the_readme_has_what_this_module_checks():
    # A parser that finds nothing passes everything: the README has python blocks and both commands.
    assert sum(b.lang == "python" for b in BLOCKS) >= 2
    assert {c.values[3] for c in COMMANDS} == {"vitfast.train", "vitfast.eval"}
    assert any(b.marker in CI_RUNS for b in BLOCKS)


def test_the_readme_states_the_suites_test_count():
    # one count, said once: what pytest collects from tests/ (a new test file means a README edit)
    stated = re.findall(r"the suite's ([\d,]+) tests", README.read_text(encoding="utf-8"))
    proc = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                           str(README.parent / "tests")], cwd=README.parent, capture_output=True, text=True, timeout=600)
    collected = re.search(r"^(\d+) tests? collected", proc.stdout, re.M)
    assert collected, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert stated == [f"{int(collected.group(1)):,}"], f"README says {stated}, pytest collects {collected.group(1)}"
    assert not re.search(r"\b[\d,]{3,} tests\b(?! collected)", README.read_text(encoding="utf-8").replace(
        f"the suite's {stated[0]} tests", "")), "another test count in the README"


@pytest.mark.parametrize("block,at,line,module,argv", COMMANDS)
def test_bash_command_parses(block, at, line, module, argv, tmp_path, monkeypatch):
    from vitfast.cli import UsageError, one_line

    monkeypatch.chdir(README.parent)  # where the reader runs it: the clone's root
    written = {}
    for name, content in written_files(BLOCKS).items():
        written[name] = tmp_path / name.lstrip("/")
        written[name].parent.mkdir(parents=True, exist_ok=True)
        written[name].write_text(content)
    # `-c FILE` where FILE is one the README writes: read the copy written above.
    argv = [str(written[a]) if a in written and k and argv[k - 1] in ("-c", "--config") else a
            for k, a in enumerate(argv)]
    try:
        if module == "vitfast.train":
            from vitfast.training.config import resolve

            resolve(argv)
        else:
            from vitfast.eval import build_parser

            build_parser().parse_args(argv)
        error = None
    except UsageError as e:
        error = one_line(e)
    if error:  # failed here, not in the except block: no "during handling" chain in the report
        pytest.fail(f"block {block.id} ({block.file}:{at}): {line}\n  {module}: {error}", pytrace=False)


def test_the_parser_on_a_made_up_readme():
    text = ("# Top\n\n## Use it: `x`\n<!-- readme-test: skip needs two GPUs -->\n```python\nprint(1)\n```\n"
            "```bash\n# not a heading\npython -m vitfast.train --lr 1 \\\n  --epochs 2  # a comment\n"
            "torchrun --nproc_per_node 2 -m vitfast.train -c a.yaml && echo done\npython -m vitfast.check\n"
            "cat > a.yaml <<'EOF'\nlr: 0.1\nEOF\n```\n")
    py, sh = blocks(text)
    assert (py.id, py.line, skip_reason(py), py.code) == ("use-it-x-block0", 5, "needs two GPUs", "print(1)\n")
    assert (sh.id, skip_reason(sh)) == ("use-it-x-block0", None), "the shell comment is no heading"
    assert commands(sh) == [(10, "python -m vitfast.train --lr 1 --epochs 2  # a comment", "vitfast.train",
                             ["--lr", "1", "--epochs", "2"]),
                            (12, "torchrun --nproc_per_node 2 -m vitfast.train -c a.yaml && echo done",
                             "vitfast.train", ["-c", "a.yaml"])]
    assert written_files([sh]) == {"a.yaml": "lr: 0.1\n"}
    doc = blocks(text, "docs/a_page.md")[0]  # a docs/ page's blocks: run alike, named for the page
    assert (doc.id, doc.file) == ("a_page-use-it-x-block0", "docs/a_page.md")
