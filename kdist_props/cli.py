"""The `kdist-props` command: compare reports, run the mutation analysis, time leaky targets."""

import sys

USAGE = """usage: kdist-props compare OLD.json NEW.json   regressions, fixes and support changes between two reports
       kdist-props mutants [--world-sizes 1,2,4] [--profile ci] [--mutants a,b]
                                               reference + every mutant; prints the mutation score
       kdist-props leaks [--world-sizes 1,2,4] [--profile ci] [--ceilings 64,128,256,512,none]
                                               reference vs targets that leak process groups, per thread
                                               ceiling: wall time, ratio, pool replacements, most threads"""


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "compare":
        from kdist_props.reporting.compare import compare_main

        return compare_main(rest)
    if command == "mutants":
        from kdist_props.harness.mutation import main as mutants_main

        return mutants_main(rest)
    if command == "leaks":
        from kdist_props.harness.leaks import main as leaks_main

        return leaks_main(rest)
    print(f"kdist-props: unknown command {command!r}\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
