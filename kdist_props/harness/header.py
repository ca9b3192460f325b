"""The report header and the session's closing summary: what ran (target,
versions, profile, world sizes), what the harness saw (stats.py), and where
the report went."""

import os

from hypothesis import settings

from kdist_props import contract
from kdist_props.reporting import report
from kdist_props.cluster import PoolManager
from kdist_props.harness.costs import cost_line
from kdist_props.properties.lifecycle import RANK_MODULES
from kdist_props.targets import registry


def pool_manager(config):
    """Local pools forked on this host, or pools of ranks that torchrun starts anywhere."""
    if config.torchrun:
        from kdist_props.cluster.remote import TorchrunPools

        return TorchrunPools.from_option(config.torchrun, list(config.world_sizes), device=config.device,
                                         startup_timeout_s=config.startup_timeout, preload=RANK_MODULES)
    return PoolManager(device=config.device, startup_timeout_s=config.startup_timeout, preload=RANK_MODULES)


def header(config):
    import hypothesis
    import torch

    return {
        "target": ",".join(config.targets),
        "keras_version": config.keras_version,
        "keras_origin": config.keras_origin,
        "torch_version": torch.__version__,
        "hypothesis_version": hypothesis.__version__,
        "profile": config.profile,
        "world_sizes": list(config.world_sizes),
        "device": config.device,
        "backend": config.backend,
        "target_selected_by": config.target_source,
        "targets": {t: registry.load_target(t).describe() for t in config.targets},
    }


def header_lines(config, baseline):
    h = header(config)
    return [
        f"kdist-props: target={h['target']} world sizes={h['world_sizes']} device={h['device']} "
        f"backend={h['backend']} profile={h['profile']} deadline={config.deadline:g}s "
        f"(target from {h['target_selected_by']})",
        f"kdist-props: keras {h['keras_version']} ({h['keras_origin']}), torch {h['torch_version']}, "
        f"hypothesis {h['hypothesis_version']}, baseline {baseline.path}",
    ]


def harness_facts(session):
    return session.stats.facts(max_threads=session.pools.max_threads, long_deadline=session.config.deadline)


def write_report(session):
    """Write the report of a finished session; return the summary lines (none when no property ran)."""
    config = session.config
    facts = {**header(config), "baseline": str(session.baseline.path) if session.baseline.path else None,
             "respawned_pools": len(session.pools.respawns), **harness_facts(session),
             "time": session.costs.split(session.pools),
             "examples_per_clause": session.builder.examples_per_clause(),
             "example_database": example_database_facts(session.database_entries_at_start)}
    facts["cost"] = cost_line(facts["time"], facts["leaks"])
    if not session.builder.recorded:
        return []  # no property ran (e.g. only the suite's own tests)
    expected = [(c.id, ws) for c in contract.CLAUSES for ws in config.world_sizes]
    expected_by_target = [t for t in config.targets if not t.startswith(registry.MUTANT_PREFIX)]
    built = session.builder.build(facts, expected, expected_by_target)
    md_path = os.path.splitext(config.report_path)[0] + ".md"
    report.write(built, config.report_path, md_path)
    summary = report.summary_lines(built) + [f"report: {config.report_path} and {md_path}"]
    summary += [f"backend limitation (not a target bug): {line}" for line in facts["backend_limitations"]]
    summary.append(facts["cost"])
    summary.append("examples per clause: " + ", ".join(
        f"{clause}={count}" for clause, count in facts["examples_per_clause"].items()))
    database = facts["example_database"]
    if database:
        summary.append(f"example database {database['path']}: {database['entries_at_start']} entries at "
                       f"start, {database['entries_at_end']} at the end")
    return summary


def example_database_facts(entries_at_start):
    """Where the profile keeps examples between runs, and how many it held
    when the session started and ended (a run that starts from an earlier
    one's database shows a non-zero start)."""
    path = database_path()
    if path is None:
        return None
    return {"path": path, "entries_at_start": entries_at_start, "entries_at_end": count_files(path)}


def database_path():
    """The directory of the loaded profile's example database, or None (ci keeps none)."""
    path = getattr(settings.default.database, "path", None)
    return None if path is None else str(path)


def count_files(path):
    if path is None or not os.path.isdir(path):
        return 0
    return sum(len(files) for _, _, files in os.walk(path))
