"""Shared by the CLI tests: run ``personalize-pipeline`` in-process."""

from personalize_pipeline import cli


def call(capsys, *args) -> tuple[int, str, str]:
    """``cli.main`` in-process: (exit code, stdout, stderr)."""
    capsys.readouterr()
    try:
        rc = cli.main([str(a) for a in args])
    except SystemExit as exc:  # argparse errors
        rc = exc.code
    out, err = capsys.readouterr()
    return rc, out, err
