"""`python -m vaekit …` in a subprocess, as a user runs it: the helper the CLI tests share."""

import subprocess
import sys


def vaekit_cli(*args, check=True, env=None):
    proc = subprocess.run([sys.executable, "-m", "vaekit", *map(str, args)], capture_output=True, text=True,
                          timeout=300, check=False, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(proc.stderr)
    return proc
