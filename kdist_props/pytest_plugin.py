"""pytest integration: options, pools per world size, the `kdist` fixture,
Hypothesis profiles, baselines as strict xfails, and the capability report."""

import os

import pytest

from kdist_props.environment import ConfigError

KDIST_FIXTURE = "kdist"


def pytest_addoption(parser):
    group = parser.getgroup("kdist", "kdist-props: Keras distribution properties")
    env = os.environ.get
    group.addoption("--kdist-target", default=env("KDIST_TARGET", "keras"),
                    help="target(s) under test, comma separated: keras, reference, mutant:<name> (env KDIST_TARGET)")
    group.addoption("--kdist-world-sizes", default=env("KDIST_WORLD_SIZES", "1,2,4"),
                    help="comma-separated world sizes (env KDIST_WORLD_SIZES; default 1,2,4)")
    group.addoption("--kdist-device", default=env("KDIST_DEVICE", "cpu"), choices=("cpu", "cuda"),
                    help="cpu (gloo) or cuda (NCCL; a world size needs as many GPUs)")
    group.addoption("--kdist-deadline", type=float, default=float(env("KDIST_DEADLINE", "60")),
                    help="seconds one example may take on the ranks before they are dumped and killed")
    group.addoption("--kdist-startup-timeout", type=float, default=float(env("KDIST_STARTUP_TIMEOUT", "180")),
                    help="seconds a pool may take to start")
    group.addoption("--kdist-profile", default=None,
                    help="Hypothesis profile: dev, ci, nightly (env KDIST_PROFILE; ci when CI is set, else dev)")
    group.addoption("--kdist-report", default=env("KDIST_REPORT", "reports/kdist-report.json"),
                    help="JSON report path; the Markdown table goes next to it (.md)")
    group.addoption("--kdist-baselines", default=env("KDIST_BASELINES", "baselines"),
                    help="folder of known-failure files <target>-<version>.toml")
    group.addoption("--kdist-mutant-scope", default="breaks", choices=("breaks", "first-catch", "all"),
                    help="run a mutant on the clauses it breaks only, on those until one of their tests "
                         "fails (first-catch: the mutation analysis), or on every clause")
    group.addoption("--kdist-budget", type=float, default=float(env("KDIST_BUDGET", "0")) or None,
                    metavar="MINUTES", help="time-boxed fuzzing: run the properties round robin, a few examples "
                                            "per turn, until MINUTES have passed (env KDIST_BUDGET)")
    group.addoption("--kdist-torchrun", default=env("KDIST_TORCHRUN"), metavar="HOST:PORT",
                    help="torchrun mode: listen on HOST:PORT for ranks started by `torchrun ... -m "
                         "kdist_props.cluster.remote_rank --driver=HOST:PORT` (env KDIST_TORCHRUN; needs KDIST_AUTHKEY)")


def pytest_configure(config):
    config.addinivalue_line("markers", "clause(id): the contract clause a property test checks")
    config.addinivalue_line("markers", "selftest: a test of the suite itself")
    config.addinivalue_line("markers", "environment(id, workaround=...): a probe of torch itself, recorded in the "
                                       "report's environment section")
    try:
        from kdist_props.harness.session import Session

        config.kdist = Session.from_pytest(config)
    except ConfigError as error:
        raise pytest.UsageError(str(error)) from None


def pytest_report_header(config):
    from kdist_props.harness import header

    return header.header_lines(config.kdist.config, config.kdist.baseline)


def pytest_generate_tests(metafunc):
    if KDIST_FIXTURE not in metafunc.fixturenames:
        return
    session = metafunc.config.kdist
    marker = metafunc.definition.get_closest_marker("clause")
    clause = marker.args[0] if marker else None
    cases = session.cases_for(clause)
    ids = [session.case_id(target, ws) for target, ws in cases]
    metafunc.parametrize(KDIST_FIXTURE, cases, ids=ids, indirect=True, scope="session")


@pytest.fixture(scope="session")
def kdist(request):
    """A runner on the pool of the parametrized world size, for the parametrized target."""
    target, world_size = request.param
    return request.config.kdist.runner(target, world_size)


@pytest.fixture(autouse=True)
def _kdist_item(request):
    """Tell the session which test runs, so examples and failures are attributed to it."""
    session = request.config.kdist
    if KDIST_FIXTURE in request.fixturenames:
        runner = request.getfixturevalue(KDIST_FIXTURE)
        marker = request.node.get_closest_marker("clause")
        session.begin_test(request.node, runner, marker.args[0] if marker else None)
    yield


def pytest_runtestloop(session):
    """--kdist-budget: turns of the tests, round robin, until the budget is spent."""
    kdist = session.config.kdist
    if not kdist.config.budget_s or session.config.option.collectonly:
        return None
    from kdist_props.harness import budget
    from kdist_props.harness.session import item_case

    kdist.turns = budget.run_round_robin(session, kdist.config.budget_s, lambda item: item_case(item)[2],
                                         kdist.config.profile)
    return True


def pytest_collection_modifyitems(session, config, items):
    config.kdist.apply_baselines(items)


@pytest.hookimpl(wrapper=True, trylast=True)
def pytest_runtest_call(item):
    from kdist_props.reporting import repro
    from kdist_props.harness import outcomes

    with item.config.kdist.hypothesis_statistics(), repro.recording(item):
        try:
            return (yield)
        except outcomes.SuiteVerdict as verdict:  # raised in the driver, e.g. by the adapter
            raise outcomes.skip_for(verdict) from None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    item.config.kdist.record(item, call, report)


def pytest_sessionfinish(session, exitstatus):
    kdist = getattr(session.config, "kdist", None)
    if kdist is not None:
        kdist.finish()


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    kdist = getattr(config, "kdist", None)
    if kdist is not None and kdist.summary:
        terminalreporter.section("kdist-props report")
        for line in kdist.summary:
            terminalreporter.write_line(line)
    if kdist is not None and kdist.builder.recorded:
        from kdist_props.harness import header
        from kdist_props.harness.stats import HarnessStats

        terminalreporter.section("kdist-props harness")
        for line in HarnessStats.lines(header.harness_facts(kdist)):
            terminalreporter.write_line(line)
