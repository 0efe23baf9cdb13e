import logging
import os
import sys

from .cli import main
from .training.distributed import from_env

code = main()
launch = from_env()
if code != 0 or launch is not None and launch.world_size > 1:
    # Under torchrun, leave without the interpreter's finalization: every file is written and the process
    # group destroyed by now, but gloo work objects that DDP's hooks on the model keep alive can be freed
    # during finalization, after their process group, and abort the process (SIGABRT, "terminate called
    # without an active exception"; pytorch/pytorch#179291), which torchrun reports as a failed job. A refusal
    # leaves so too: after a Parquet table was read (pyarrow's threads beside torch's), finalization aborted one
    # refused command in four, exit status 134 instead of 2; a refusal has written what it writes by now.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
sys.exit(code)
