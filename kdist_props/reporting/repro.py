"""A standalone repro script for every failing cell (issue 9, item 4).

While a property test runs, `recording(item)` notes what each Hypothesis test
case drew (`data.draw`); the draws of the final replays are the shrunk
counterexample. After the failure, `write_repro` writes
`<report folder>/repros/<clause>-<case id>.py`: a script that runs under
`torchrun --nproc-per-node=N`, and on each rank runs the test function itself
(its source, decorators and Hypothesis/pytest/strategy imports replaced by
stubs) with those draws. The suite's modules the test, its body and the target
need travel inside the script as source strings behind a small importer, so
it needs torch, numpy and Keras only, never an installed kdist-props.

Driver side only: this module imports pytest and Hypothesis; the script it
writes must not, and the bundle is checked for it (`foreign_imports`).
"""

import ast
import base64
import contextlib
import inspect
import pickle
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import kdist_props
from kdist_props.contract import specs
from kdist_props.harness.runner import is_final_replay

PACKAGE_ROOT = Path(kdist_props.__file__).resolve().parent
# What a bundled module may import besides the standard library and itself.
ALLOWED_IMPORTS = {"torch", "numpy", "keras", "kdist_props"}
# Imports of a test module the script replaces by a stub that accepts anything:
# Hypothesis and pytest drive the test, strategies only draw (the draws are inlined).
STUBBED_IMPORTS = ("hypothesis", "pytest", "kdist_props.strategies")
KERAS_TARGET_MODULES = ["kdist_props.targets.registry", "kdist_props.targets.keras"]
IN_HOUSE_TARGET_MODULES = ["kdist_props.targets.registry", "kdist_props.targets.mutants"]
# The script runs the suite's own rank code: the bring-up's backends, and the
# runner that executes a body on this rank and gathers every rank's reply.
ALWAYS_BUNDLED = ["kdist_props.contract.specs", "kdist_props.cluster.bringup", "kdist_props.harness.collective_runner"]
PARENT_ONLY = '"""(Only the parent package of bundled modules here.)"""\n'

RECORDING = pytest.StashKey()


@dataclass
class TestCaseDraws:
    final: bool  # Hypothesis' replay of a shrunk failure
    draws: list = field(default_factory=list)  # (label, value)


@dataclass
class Recording:
    cases: list = field(default_factory=list)
    _data_object: object = None

    def note(self, data_object, label, value):
        if data_object is not self._data_object:  # Hypothesis makes one DataObject per test case
            self._data_object = data_object
            self.cases.append(TestCaseDraws(final=is_final_replay()))
        self.cases[-1].draws.append((label, value))

    def counterexamples(self):
        """The draws of every final replay (one per distinct failure), else of the last test case."""
        finals = [case.draws for case in self.cases if case.final]
        if finals or not self.cases:
            return finals
        return [self.cases[-1].draws]


_active = []  # the Recording that DataObject.draw feeds, while a test runs


@contextlib.contextmanager
def recording(item):
    """Note every `data.draw` of `item`'s test cases in item.stash[RECORDING]."""
    from hypothesis.strategies._internal.core import DataObject

    if _active:  # already recording (a hook installed twice): one recorder is enough
        yield
        return
    record = item.stash[RECORDING] = Recording()
    original = DataObject.draw

    def draw(self, strategy, label=None):
        value = original(self, strategy, label=label)
        if _active:
            _active[-1].note(self, label, value)
        return value

    DataObject.draw = draw
    _active.append(record)
    try:
        yield
    finally:
        _active.pop()
        DataObject.draw = original


# -- writing the script ------------------------------------------------------

_written = {}  # path -> {"nodeid#n": case}: a cell's script holds every failing test (and distinct failure) of the cell


def repro_path(report_path, clause, case_id):
    folder = Path(report_path).resolve().parent / "repros"
    return folder / f"{clause}-{case_id.replace(':', '-')}.py"


def write_repro(item, *, target, clause, world_size, case_id, device, report_path, failure_text=""):
    """Write (or extend) the repro script of the cell of `item`; return its path, or None when
    there is nothing to replay (a test that draws, failing before its first draw)."""
    path = repro_path(report_path, clause, case_id)
    inner = getattr(item.function, "hypothesis", None)
    inner = inner.inner_test if inner is not None else item.function
    record = item.stash.get(RECORDING, None)
    counterexamples = record.counterexamples() if record else []
    if "run_state_machine_as_test" in inspect.getsource(inner):
        # A state machine's steps are rules (whose arguments it draws), not a test
        # function's draws: the script prints Hypothesis' steps (see run_case).
        counterexamples = [None]
    elif not counterexamples:
        if "data" in inspect.signature(inner).parameters:
            return None  # failed before its first draw
        counterexamples = [[]]
    callspec = getattr(item, "callspec", None)
    params = {k: v for k, v in callspec.params.items() if k != "kdist"} if callspec else {}
    cases = _written.setdefault(path, {})
    for index, draws in enumerate(counterexamples):
        cases[f"{item.nodeid}#{index}"] = {
            "nodeid": item.nodeid, "module": item.module.__name__, "function": inner.__name__,
            "params": params, "draws": draws, "steps": None if draws is not None else hypothesis_steps(failure_text),
        }
    modules = {case["module"] for case in cases.values()}
    sources = {name: test_module_source(sys.modules[name]) for name in sorted(modules)}
    bundle = bundle_sources(target, [sys.modules[name] for name in modules])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_script(clause=clause, target=target, world_size=world_size, device=device,
                                  cases=list(cases.values()), test_sources=sources, bundle=bundle))
    return path


def clear_repros(report_path):
    """Remove the repros an earlier run left beside this report (a cell that passes now must
    not keep one); only scripts this module wrote, recognised by their first docstring line."""
    folder = repro_path(report_path, "x", "x").parent
    for script in folder.glob("*.py") if folder.is_dir() else ():
        if script.read_text(errors="replace").startswith(SCRIPT.split("{")[0]):
            script.unlink()


def command_line(path, world_size):
    return f"torchrun --standalone --nproc-per-node={world_size} {path}"


def hypothesis_steps(text):
    """The assertion and the steps of each falsifying state machine run, as Hypothesis printed them
    (inside an exception group, its lines start with `|`)."""
    lines = [line.strip().lstrip("|+-").strip() for line in text.splitlines()]
    kept, inside = [], False
    for line in lines:
        inside = inside or line.startswith("state = ")
        if inside or line.startswith("AssertionError: "):
            kept.append(line)
        if line == "state.teardown()":
            inside = False
            kept.append("")
    return "\n".join(kept) or text


# -- the bundle ----------------------------------------------------------------

def module_file(name):
    parts = name.split(".")[1:]
    package = PACKAGE_ROOT.joinpath(*parts, "__init__.py")
    return package if package.exists() else PACKAGE_ROOT.joinpath(*parts).with_suffix(".py")


def is_module(name):
    return name == "kdist_props" or module_file(name).exists()


def imported_modules(tree, top_level_only):
    """(module, line) of every absolute import in `tree`; `from a import b` gives a.b when that is a module."""
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    if top_level_only:  # imports under a top-level try/if run at import time too
        nodes = [n for stmt in nodes for n in ast.walk(stmt) if not isinstance(
            stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
    found = []
    for node in nodes:
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.append((node.module, node.lineno))
            found += [(f"{node.module}.{alias.name}", node.lineno) for alias in node.names
                      if node.module.startswith("kdist_props") and is_module(f"{node.module}.{alias.name}")]
    return found


def with_packages(name):
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def bundle_sources(target, test_modules):
    """{module name: source} of the suite's modules the scripts' tests and target import, transitively
    (import-time imports; a function-level import of a module left out fails when it runs)."""
    roots = list(ALWAYS_BUNDLED)
    roots += KERAS_TARGET_MODULES if target == "keras" else IN_HOUSE_TARGET_MODULES
    for module in test_modules:
        roots += [name for name, _ in imported_modules(ast.parse(inspect.getsource(module)), top_level_only=True)
                  if name.startswith("kdist_props") and not name.startswith(STUBBED_IMPORTS) and is_module(name)]
    bundle, todo = {}, list(roots)
    while todo:
        name = todo.pop()
        if bundle.get(name):
            continue
        bundle[name] = module_file(name).read_text()
        imported = [m for m, _ in imported_modules(ast.parse(bundle[name]), top_level_only=True)
                    if m.startswith("kdist_props") and is_module(m)]
        todo += imported
        # A package that is only the parent of what is needed is served empty: its
        # __init__ may import what is not needed (kdist_props.cluster imports the pool).
        # The root package's __init__ is always real: it selects Keras' torch backend.
        for parent in {p for m in [name, *imported] for p in with_packages(m)[:-1]}:
            if parent not in bundle:
                bundle[parent] = "" if parent != "kdist_props" else None
                if parent == "kdist_props":
                    todo.append(parent)
    return {name: source or PARENT_ONLY for name, source in sorted(bundle.items())}


def foreign_imports(bundle):
    """`module:line imports X` for every import (at any level) of a bundled module that is neither the
    standard library nor torch, numpy, keras or the suite: the script would need it installed."""
    found = []
    for name, source in bundle.items():
        for imported, line in imported_modules(ast.parse(source), top_level_only=False):
            top = imported.split(".")[0]
            if top not in ALLOWED_IMPORTS and top not in sys.stdlib_module_names:
                found.append(f"{name}:{line} imports {imported}")
    return found


# -- the test module, made runnable without Hypothesis or pytest --------------------

def test_module_source(module):
    """The test module's source with its stubbed imports replaced by `name = _ANY` and the
    decorators of its top-level functions and classes removed; comments kept."""
    source = inspect.getsource(module)
    lines = source.splitlines()
    edits = []  # (first line, last line, replacement lines), 1-based
    for node in ast.parse(source).body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            module_name = node.module if isinstance(node, ast.ImportFrom) else node.names[0].name
            if module_name and module_name.startswith(STUBBED_IMPORTS):
                names = [(alias.asname or alias.name).split(".")[0] for alias in node.names]
                edits.append((node.lineno, node.end_lineno, [f"{name} = _ANY  # was: {module_name}"
                                                             for name in names]))
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.decorator_list:
            edits.append((node.decorator_list[0].lineno, node.lineno - 1, []))
    for first, last, replacement in sorted(edits, reverse=True):
        lines[first - 1:last] = replacement
    return "\n".join(lines) + "\n"


# -- literals ----------------------------------------------------------------------

def literal(value):
    """Python source that evaluates to `value` in the script: its repr when that round-trips
    (the frozen dataclasses of specs print as constructor calls), else a pickle."""
    text = repr(value)
    try:
        if type(eval(text, literal_namespace())) is type(value) and eval(text, literal_namespace()) == value:
            return text
    except Exception:  # no round trip (arrays, tensors, NaN): pickle below
        pass
    return f"_unpickled({base64.b64encode(pickle.dumps(value)).decode()!r})"


def literal_namespace():
    import numpy as np
    import torch

    names = {name: getattr(specs, name) for name in dir(specs) if isinstance(getattr(specs, name), type)}
    return {**names, "np": np, "torch": torch}


def render_draws(draws):
    if draws is None:
        return "None"
    return "[\n" + "".join(f"            ({label!r}, {literal(value)}),\n" for label, value in draws) + "        ]"


def render_script(*, clause, target, world_size, device, cases, test_sources, bundle):
    nodeids = sorted({case["nodeid"] for case in cases})
    rendered_cases = "".join(
        "    dict(\n"
        f"        nodeid={case['nodeid']!r},\n"
        f"        module={case['module']!r}, function={case['function']!r},\n"
        f"        params={{{', '.join(f'{k!r}: {literal(v)}' for k, v in case['params'].items())}}},\n"
        f"        draws={render_draws(case['draws'])},\n"
        f"        steps={case['steps']!r},\n"
        "    ),\n" for case in cases)
    foreign = foreign_imports(bundle)
    return SCRIPT.format(
        clause=clause, target=target, world_size=world_size, device=device,
        nodeids="\n".join(f"  {n}" for n in nodeids),
        foreign="".join(f"# WARNING: needs a package beyond torch, numpy, keras: {f}\n" for f in foreign),
        bundle="".join(f"    {name!r}: {source!r},\n" for name, source in bundle.items()),
        test_sources="".join(f"    {name!r}: {source!r},\n" for name, source in test_sources.items()),
        cases=rendered_cases,
    )


SCRIPT = '''\
#!/usr/bin/env python
"""kdist-props repro: clause {clause}, target {target}, {world_size} ranks.

Failing test(s):
{nodeids}

Run:  torchrun --standalone --nproc-per-node={world_size} <this file> [--target NAME] [--device cpu|cuda]

Each rank runs the test function below (from the kdist-props suite, with the
shrunk Hypothesis counterexample inlined as literals) on a real process group.
Prints what was expected and what came; exits 1 when the property fails, 0
when it holds. Needs torch, numpy and keras only: the suite's modules it uses
are bundled below (BUNDLE) and served by an importer, whether or not
kdist-props is installed.
"""
{foreign}
import argparse
import base64
import importlib.abc
import importlib.util
import linecache
import os
import pickle
import sys
import traceback

os.environ.setdefault("KERAS_BACKEND", "torch")

DEFAULT_TARGET = {target!r}
DEFAULT_DEVICE = {device!r}
WORLD_SIZE = {world_size}

# The suite's modules (kdist_props.*), as they were when the failure was found.
BUNDLE = {{
{bundle}}}

# The test modules, with Hypothesis, pytest and the strategies replaced by _ANY.
TEST_SOURCES = {{
{test_sources}}}


class BundleImporter(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves BUNDLE's modules ahead of any installed kdist_props."""

    def find_spec(self, name, path=None, target=None):
        if name in BUNDLE:
            is_package = any(other.startswith(name + ".") for other in BUNDLE)
            return importlib.util.spec_from_loader(name, self, origin="bundle:" + name, is_package=is_package)
        if name == "kdist_props" or name.startswith("kdist_props."):
            raise ImportError(f"{{name}} is not in this repro's bundle")
        return None

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        exec(compile_shown(BUNDLE[module.__name__], module.__spec__.origin), module.__dict__)


def compile_shown(source, filename):
    """Compile `source` so that tracebacks show its lines (linecache has no file to read)."""
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    return compile(source, filename, "exec")


sys.meta_path.insert(0, BundleImporter())

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

from kdist_props.cluster.bringup import BACKENDS  # noqa: E402
from kdist_props.cluster.errors import RankFailure  # noqa: E402
from kdist_props.harness.collective_runner import CollectiveRunner  # noqa: E402
from kdist_props.contract.specs import *  # noqa: E402,F401,F403  (the literals below name these)


def _unpickled(text):
    return pickle.loads(base64.b64decode(text))


CASES = [
{cases}]


class _Anything:
    """Stands for Hypothesis, pytest and the strategies: the draws are inlined."""

    def __init__(self, *args, **kwargs):
        pass

    def __getattr__(self, name):
        return self

    def __call__(self, *args, **kwargs):
        return self

    def __mro_entries__(self, bases):
        return (object,)

    # Module-level settings arithmetic (e.g. `settings.default.max_examples // 2`).
    def _absorb(self, *args):
        return self

    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = _absorb
    __floordiv__ = __rfloordiv__ = __truediv__ = __rtruediv__ = _absorb

    def __index__(self):
        return 1

    def __iter__(self):  # module-level loops over stubbed constants (e.g. parametrize lists)
        return iter(())

    def __lt__(self, other):
        return False

    __gt__ = __le__ = __ge__ = __lt__


_ANY = _Anything()


class Draws:
    """`data` of the test: each draw returns the next recorded value."""

    def __init__(self, draws):
        self.draws = list(draws)

    def draw(self, strategy, label=None):
        recorded_label, value = self.draws.pop(0)
        assert label == recorded_label, f"draw {{label!r}} where the failure drew {{recorded_label!r}}"
        return value


_modules = {{}}


def test_function(case):
    if case["module"] not in _modules:
        namespace = {{"__name__": case["module"], "_ANY": _ANY}}
        exec(compile_shown(TEST_SOURCES[case["module"]], case["module"].replace(".", "/") + ".py"), namespace)
        _modules[case["module"]] = namespace
    return _modules[case["module"]][case["function"]]


def run_case(case, runner):
    """None when the property holds for the case, else what failed."""
    if case["draws"] is None:
        return ("a stateful test: this script cannot replay it; run the pytest command of the report. "
                "Hypothesis' steps:\\n" + (case["steps"] or "(not printed)"))
    test = test_function(case)
    arguments = {{"kdist": runner, "data": Draws(case["draws"]), **case["params"]}}
    wanted = test.__code__.co_varnames[:test.__code__.co_argcount]
    try:
        test(**{{name: value for name, value in arguments.items() if name in wanted}})
    except AssertionError as error:
        return f"AssertionError: {{error}}"
    except RankFailure as error:
        return f"a rank failed: {{error}}"
    except Exception:  # the test itself broke (an oracle on this example): show where
        return traceback.format_exc()
    return None


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default=os.environ.get("KDIST_TARGET", DEFAULT_TARGET),
                        help="keras, or (with the in-house targets bundled) reference, mutant:<name>")
    parser.add_argument("--device", default=os.environ.get("KDIST_DEVICE", DEFAULT_DEVICE), choices=("cpu", "cuda"))
    args = parser.parse_args()
    rank, world_size = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    if args.device == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", rank)))
    dist.init_process_group(BACKENDS[args.device])
    code = 1
    try:
        code = run_all(args, rank, world_size)
        # torchrun stops the other ranks when one exits non-zero: none leaves before all have printed.
        dist.barrier()
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            dist.destroy_process_group()
        finally:
            # A normal exit after gloo work sometimes aborts in a C++ destructor.
            os._exit(code)


def run_all(args, rank, world_size):
    import keras

    say = (lambda *a: print(*a, flush=True)) if rank == 0 else (lambda *a: None)
    say(f"kdist-props repro: target {{args.target}}, {{world_size}} ranks, device {{args.device}}; "
        f"keras {{keras.__version__}} ({{os.path.dirname(keras.__file__)}}), torch {{torch.__version__}}")
    if world_size != WORLD_SIZE:
        say(f"note: the failure was found with {{WORLD_SIZE}} ranks")
    failures = 0
    for case in CASES:
        say(f"\\n{{case['nodeid']}}")
        for name, value in case["params"].items():
            say(f"  parameter {{name}} = {{value!r}}")
        for number, (label, value) in enumerate(case["draws"] or [], start=1):
            say(f"  Draw {{number}} ({{label}}): {{value!r}}")
        failure = run_case(case, CollectiveRunner(rank, world_size, args.device, args.target))
        if failure is None:
            say(f"holds: the property holds for this example on target {{args.target}}")
        else:
            failures += 1
            say(f"FAILS on target {{args.target}}: {{failure}}")
    say(f"\\n{{failures}} of {{len(CASES)}} example(s) fail")
    return 1 if failures else 0


if __name__ == "__main__":
    main()
'''
