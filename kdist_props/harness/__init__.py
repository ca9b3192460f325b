"""Running the contract: one pytest session (session.py) with its settings
(config.py), the `kdist` runner and its deadline and leak policies
(runner.py), the one place a test's outcome is decided (outcomes.py),
proven backend limitations (limitations.py), what the harness saw
(stats.py, header.py), Hypothesis profiles, time-boxed fuzzing (budget.py)
and the suite's own analyses (mutation.py, leaks.py)."""
