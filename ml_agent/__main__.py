"""`python -m ml_agent ...`: the `ml-agent` command without its console script."""

from ml_agent.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
