"""
masterd-client runs on Python 3.9 and newer (the Pythons of Blender, Houdini,
Maya and Nuke) and needs nothing outside the standard library: every module
compiles for 3.9's grammar, imports nothing else (PyYAML and openjd-model only
where they are optional), and, where a Python 3.9 is on this machine
(C{$MASTERD_PYTHON39}, pyenv's, or C{python3.9} on the PATH), imports and
works there.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

SOURCE = Path(__file__).resolve().parent.parent / "client" / "src" / "masterd_client"

#: Imported inside a function, under try/except ImportError: used where they
#: are installed, and the client works without them.
OPTIONAL = {"yaml", "openjd"}


def modules() -> list[Path]:
    found = sorted(SOURCE.glob("*.py"))
    assert found, f"no client modules under {SOURCE}"
    return found


def imports(tree: ast.AST) -> list[tuple[str, bool]]:
    """
    Each absolute import's top-level name, and whether it is made when the
    module is (not in a function); imports under C{if TYPE_CHECKING:} are
    for the type checker alone.
    """
    found: list[tuple[str, bool]] = []

    def visit(node: ast.AST, atImport: bool) -> None:
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            for child in node.orelse:
                visit(child, atImport)
            return
        if isinstance(node, ast.Import):
            found.extend((alias.name.split(".")[0], atImport) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.module.split(".")[0], atImport))
        inFunction = isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
        for child in ast.iter_child_nodes(node):
            visit(child, atImport and not inFunction)

    visit(tree, True)
    return found


class Python39Tests(SynchronousTestCase):
    def test_grammar(self) -> None:
        """
        Every module parses as Python 3.9 (no match statement, no
        parenthesized context managers, no except*, ...).
        """
        for path in modules():
            try:
                ast.parse(path.read_text(encoding="utf-8"), str(path), feature_version=(3, 9))
            except SyntaxError as e:
                self.fail(f"{path.name} is not Python 3.9: {e}")

    def test_newerNames(self) -> None:
        """
        Names that Python 3.9 lacks, found by the grammar check only when
        they run: C{datetime.UTC}, C{typing.Self} outside C{TYPE_CHECKING},
        C{dataclasses.KW_ONLY}, C{zip(strict=...)}, C{X | Y} outside
        annotations (in isinstance, in a type alias).
        """
        newer = {
            ("datetime", "UTC"),
            ("dataclasses", "KW_ONLY"),
            ("typing", "Self"),
            ("typing", "TypeAlias"),
            ("enum", "StrEnum"),
            ("typing", "assert_never"),
        }
        for path in modules():
            tree = ast.parse(path.read_text(encoding="utf-8"))
            checking = {
                id(n)
                for node in ast.walk(tree)
                if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING"
                for n in ast.walk(node)
            }
            annotations = {
                id(n)
                for node in ast.walk(tree)
                for annotation in _annotations(node)
                for n in ast.walk(annotation)
            }
            for node in ast.walk(tree):
                where = f"{path.name} line {getattr(node, 'lineno', '?')}"
                if isinstance(node, ast.ImportFrom) and id(node) not in checking:
                    for alias in node.names:
                        self.assertNotIn((node.module, alias.name), newer, where)
                if isinstance(node, ast.Call):
                    self.assertNotIn("strict", [k.arg for k in node.keywords], where)
                if (
                    isinstance(node, ast.BinOp)
                    and isinstance(node.op, ast.BitOr)
                    and id(node) not in annotations
                ):
                    for side in (node.left, node.right):
                        self.assertFalse(_isTypeName(side), f"{where}: X | Y of types")

    def test_standardLibraryOnly(self) -> None:
        """
        Every module imports only the standard library and its own package
        when it is imported; PyYAML and openjd-model only inside the
        functions that use them where they are installed.
        """
        for path in modules():
            for name, atImport in imports(ast.parse(path.read_text(encoding="utf-8"))):
                if name in sys.stdlib_module_names or name == "__future__":
                    continue
                self.assertFalse(atImport, f"{path.name} imports {name} when it is imported")
                self.assertIn(name, OPTIONAL, f"{path.name} imports {name}")

    def test_runsThere(self) -> None:
        """
        Under a real Python 3.9 with site-packages off: every module imports,
        and the client and masterctl work against a fake opener (times read,
        a job and an OpenJD template submitted, output printed).
        """
        python = python39()
        if not python:
            raise self.skipTest(
                "no Python 3.9 here ($MASTERD_PYTHON39, pyenv's, or python3.9 on the PATH);"
                " the grammar and names checks stand in for it"
            )
        result = subprocess.run(
            [python, "-S", "-c", SMOKE, str(SOURCE.parent)],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
            env={k: v for k, v in os.environ.items() if not k.startswith("PYTHON")},
        )
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertEqual(result.stdout.splitlines()[0], "3.9")
        self.assertEqual(result.stdout.splitlines()[-1], "ok")


def python39() -> str | None:
    """
    A Python 3.9 that runs: C{$MASTERD_PYTHON39} (.ci/run sets it), pyenv's,
    or C{python3.9} on the PATH (a pyenv shim there may have no 3.9 behind it).
    """
    pyenv = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")
    candidates = [
        os.environ.get("MASTERD_PYTHON39"),
        *sorted(str(p) for p in pyenv.glob("versions/3.9*/bin/python3.9")),
        shutil.which("python3.9"),
    ]
    for candidate in filter(None, candidates):
        try:
            ran = subprocess.run(
                [candidate, "-c", "import sys; assert sys.version_info[:2] == (3, 9)"],
                capture_output=True,
                check=False,
                timeout=30,
            )
        except OSError:
            continue
        if ran.returncode == 0:
            return candidate
    return None


def _annotations(node: ast.AST) -> list[ast.expr]:
    found: list[ast.expr] = []
    if isinstance(node, ast.AnnAssign):
        found.append(node.annotation)
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        if node.returns:
            found.append(node.returns)
        arguments = node.args
        for argument in [*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs,
                         arguments.vararg, arguments.kwarg]:  # fmt: skip
            if argument is not None and argument.annotation is not None:
                found.append(argument.annotation)
    return found


def _isTypeName(node: ast.expr) -> bool:
    names = {"int", "str", "float", "bool", "bytes", "dict", "list", "tuple", "set", "None"}
    if isinstance(node, ast.Constant):
        return node.value is None
    if isinstance(node, ast.Name):
        return node.id in names or node.id[:1].isupper()
    return isinstance(node, ast.Subscript | ast.BinOp) and _isTypeName(
        node.value if isinstance(node, ast.Subscript) else node.left
    )


#: Run by the Python 3.9 with the client's source directory as its argument.
SMOKE = r"""
import io, json, pkgutil, sys, urllib.request
print("%d.%d" % sys.version_info[:2])
sys.path.insert(0, sys.argv[1])
import masterd_client
from masterd_client import Client, LayerSpec, Dependency, parse_time, openjd_submission
from masterd_client.cli import Runtime, run
for m in pkgutil.iter_modules(masterd_client.__path__):
    if m.name != "__main__":
        __import__("masterd_client." + m.name)
assert "yaml" not in sys.modules and "openjd" not in sys.modules

for text in ["2026-11-28T22:50:18.123Z", "2026-11-28T22:50:18Z", "2026-11-28T23:50:18.5+01:00",
             "2026-11-28T22:50:18.1234567+0000", "2026-11-28T22:50:18"]:
    assert parse_time(text).utcoffset().total_seconds() in (0, 3600), text
assert parse_time("2026-11-28T22:50:18.123Z").microsecond == 123000

JOB = {"id": 7, "href": "/api/v1/jobs/7", "title": "t", "owner": "ops", "state": "queued",
       "priority": 50, "weight": 1, "paused": False, "created_at": "2026-11-28T22:50:18.123Z",
       "updated_at": "2026-11-28T22:50:18.123Z", "tasks": {"href": "/api/v1/jobs/7/tasks"},
       "task_counts": {"total": 3, "queued": 3}}
sent = []

class Answer(io.BytesIO):
    status = 200
    headers = {"Content-Type": "application/json"}
    def __init__(self, url, body):
        super().__init__(json.dumps(body).encode())
        self.url = url
    def getcode(self):
        return 200
    def geturl(self):
        return self.url
    def info(self):
        return self.headers

class Opener:
    def open(self, request, timeout=30):
        sent.append((request.get_method(), request.full_url, json.loads(request.data or b"null")))
        if request.get_method() == "GET" and request.full_url.endswith("/api/v1/jobs?limit=50"):
            return Answer(request.full_url, {"items": [JOB], "next": None})
        return Answer(request.full_url, JOB)

client = Client("http://master.test:8080", "tok", opener=Opener())
job = client.submit(title="t", command=["render", "{frame}"], frames="1-3", layers=None,
                    depends_on=[Dependency(job=3, mode="frame")])
assert job.id == 7 and job.created_at.tzinfo is not None
client.submit(title="l", layers=[LayerSpec("a", command=["x"], frames="1-3")])
template = '{"specificationVersion": "jobtemplate-2023-09", "name": "J", "steps": []}'
client.submit_openjd(template, {"Frames": "1-3"}, priority=60)
assert sent[-1][2] == {"openjd": {"template": json.loads(template),
                                  "parameters": {"Frames": "1-3"}}, "priority": 60}, sent[-1]
assert openjd_submission("name: J\n")["openjd"]["template"] == "name: J\n"  # no PyYAML: text

out, err = io.StringIO(), io.StringIO()
runtime = Runtime(out=out, err=err, environ={"MASTERD_URL": "http://master.test:8080",
                  "MASTERD_TOKEN": "tok"}, opener=Opener(), tty=False)
assert run(["jobs"], runtime) == 0, err.getvalue()
assert run(["submit", "-q", "--frames", "1-3", "--", "render", "{frame}"], runtime) == 0
assert run(["audit", "--help"], runtime) == 0
assert run(["submit", "--openjd", "-", "-p", "A"], runtime) == 2
assert "masterctl: -p: 'A' is not NAME=VALUE" in err.getvalue(), err.getvalue()
assert "shot" not in out.getvalue() and " 7 " in out.getvalue(), out.getvalue()
print("ok")
"""
